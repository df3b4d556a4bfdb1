from flask import g
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from gridapp.api.security import require
from gridapp.extensions import db
from gridapp.jobs.dispatch import enqueue_delivery
from gridapp.services import dispatching, incidents, routing
from gridapp.services.access import scope_prefix
from gridapp.services.responsibility import rules_in_scope

blp = Blueprint("dispatch", __name__, url_prefix="/api/v1/dispatch", description="Dispatch centre tools")


class RuleSchema(Schema):
    id = fields.Integer()
    category_code = fields.Function(lambda r: r.category.code if r.category else None)
    category_name = fields.Function(lambda r: r.category.name if r.category else None)
    place_code = fields.Function(lambda r: r.cell_code or r.area.code)
    squad_code = fields.Function(lambda r: r.squad.code)
    squad_name = fields.Function(lambda r: r.squad.name)
    priority = fields.Integer()
    is_fallback = fields.Boolean()
    auto_dispatch = fields.Boolean()
    note = fields.String(allow_none=True)


class RouteSchema(Schema):
    rule_id = fields.Integer(allow_none=True)
    squad_code = fields.String(allow_none=True)
    explanation = fields.String()


class NotificationSchema(Schema):
    id = fields.Integer()
    idempotency_key = fields.String()
    kind = fields.String()
    incident_id = fields.UUID()
    squad_code = fields.Function(lambda n: n.squad.code)
    state = fields.String()
    attempts = fields.Integer()
    last_error = fields.String(allow_none=True)
    sent_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


class NotificationListArgs(Schema):
    state = fields.String(load_default="dead", validate=validate.OneOf(["pending", "sent", "dead"]))


class RetrySchema(Schema):
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))


@blp.route("/rules")
@require("dispatch.manage")
@blp.response(200, RuleSchema(many=True))
def list_rules():
    """List the responsibility list (权责清单) of the caller's area."""
    return rules_in_scope(scope_prefix(g.principal))


@blp.route("/incidents/<uuid:incident_id>/route")
@require("dispatch.manage")
@blp.response(200, RouteSchema)
def explain_route(incident_id):
    """Say which rule would route this case now, and why (nothing is changed)."""
    incident = incidents.incident_in_scope(incident_id, scope_prefix(g.principal))
    rule, why = routing.route(incident)
    return {"rule_id": rule.id if rule else None, "squad_code": rule.squad.code if rule else None, "explanation": why}


@blp.route("/notifications")
@require("dispatch.manage")
@blp.arguments(NotificationListArgs, location="query")
@blp.response(200, NotificationSchema(many=True))
def list_notifications(args):
    """List notifications to squads by state; `dead` are the failed deliveries (dead letters)."""
    return dispatching.notifications_in_scope(scope_prefix(g.principal), args["state"])


@blp.route("/notifications/<int:notification_id>/retry", methods=["POST"])
@require("dispatch.manage")
@blp.arguments(RetrySchema)
@blp.response(200, NotificationSchema)
def retry_notification(body, notification_id):
    """Send a dead letter again (same idempotency key: the receiver still acts once), with a reason."""
    notification = dispatching.retry_dead(notification_id, scope_prefix(g.principal), g.user, body["reason"])
    db.session.commit()
    enqueue_delivery(notification.id)
    return notification
