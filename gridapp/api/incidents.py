from flask import g
from flask_smorest import Blueprint

from gridapp.api.security import require
from gridapp.errors import PROBLEM_MIME
from gridapp.extensions import db
from gridapp.jobs.dispatch import enqueue_outbox
from gridapp.models import IncidentEvent
from gridapp.schemas.common import ProblemSchema
from gridapp.schemas.incidents import (
    ActionResultSchema,
    ActionSchema,
    EventSchema,
    IncidentDetailSchema,
    IncidentListArgs,
    IncidentSchema,
)
from gridapp.schemas.photos import PhotoSchema
from gridapp.services import incidents, photos, workflow
from gridapp.services.access import scope_prefix
from gridapp.transactions import commit_retrying
from sync.schemas import PartySchema

blp = Blueprint("incidents", __name__, url_prefix="/api/v1/incidents", description="Incidents as reported")


@blp.route("")
@require("incident.read")
@blp.arguments(IncidentListArgs, location="query")
@blp.response(200, IncidentSchema(many=True))
def list_incidents(args):
    """List incidents in the caller's area, newest first; `outside_grid=true` lists those no cell contains."""
    return incidents.incidents_in_scope(scope_prefix(g.principal), outside_grid=args.get("outside_grid"),
                                        status=args.get("status"), limit=args["limit"], before=args.get("before"))


@blp.route("/<uuid:incident_id>")
@require("incident.read")
@blp.response(200, IncidentDetailSchema)
@blp.alt_response(404, schema=ProblemSchema, content_type=PROBLEM_MIME, description="incident.not_found")
def get_incident(incident_id):
    """Return one incident with its notes and full revision history."""
    incident = incidents.incident_in_scope(incident_id, scope_prefix(g.principal))
    incident.history = incidents.revisions(incident)
    incident.allowed_actions = workflow.allowed_actions(incident, g.user)
    incident.photo_list = photos.incident_photos(incident)
    return incident


@blp.route("/<uuid:incident_id>/photos")
@require("incident.read")
@blp.response(200, PhotoSchema(many=True))
def list_photos(incident_id):
    """List the incident's photos (present, missing or refused) with the URLs of their renditions."""
    return photos.incident_photos(incidents.incident_in_scope(incident_id, scope_prefix(g.principal)))


@blp.route("/<uuid:incident_id>/events")
@require("incident.read")
@blp.response(200, EventSchema(many=True))
def list_events(incident_id):
    """Return the case's full workflow history (留痕), oldest first."""
    incident = incidents.incident_in_scope(incident_id, scope_prefix(g.principal))
    return db.session.scalars(db.select(IncidentEvent).where(IncidentEvent.incident_id == incident.id)
                              .order_by(IncidentEvent.id)).all()


@blp.route("/<uuid:incident_id>/actions/<string:action>", methods=["POST"])
@require("incident.act")
@blp.arguments(ActionSchema)
@blp.response(200, ActionResultSchema)
@blp.alt_response(409, schema=ProblemSchema, content_type=PROBLEM_MIME, description="workflow.invalid_transition")
def act(body, incident_id, action):
    """Take a workflow action (register, dispatch, accept, return, submit_result, pass_check, …)."""
    def perform():
        event = workflow.perform(incident_id, action, g.user, prefix=scope_prefix(g.user),
                                 reason=body["reason"], params=body["params"], photos=body["photos"])
        return event, [message.id for message in event.outbox]

    event, outbox = commit_retrying(perform)  # a deadlock: the whole action again
    enqueue_outbox(outbox)
    incident = workflow.case_for_answer(incident_id)
    return {"event": event, "incident": incident, "allowed_actions": workflow.allowed_actions(incident, g.user)}


@blp.route("/<uuid:incident_id>/party", methods=["PUT"])
@require("incident.act")
@blp.arguments(PartySchema)
@blp.response(200, IncidentSchema)
@blp.alt_response(404, schema=ProblemSchema, content_type=PROBLEM_MIME, description="incident.not_found")
def record_party(body, incident_id):
    """Record the party or complainant (当事人: name, phone, ID number); answered masked."""
    incident = incidents.record_party(incident_id, body, g.user, scope_prefix(g.principal))
    db.session.commit()
    return incident
