from flask import g
from flask_smorest import Blueprint

from gridapp.api.security import require
from gridapp.errors import PROBLEM_MIME
from gridapp.schemas.common import ProblemSchema
from gridapp.schemas.incidents import IncidentDetailSchema, IncidentListArgs, IncidentSchema
from gridapp.services import incidents
from gridapp.services.access import scope_prefix

blp = Blueprint("incidents", __name__, url_prefix="/api/v1/incidents", description="Incidents as reported")


@blp.route("")
@require("incident.read")
@blp.arguments(IncidentListArgs, location="query")
@blp.response(200, IncidentSchema(many=True))
def list_incidents(args):
    """List incidents in the caller's area, newest first; `outside_grid=true` lists those no cell contains."""
    return incidents.incidents_in_scope(scope_prefix(g.user), outside_grid=args.get("outside_grid"),
                                        status=args.get("status"), limit=args["limit"], before=args.get("before"))


@blp.route("/<uuid:incident_id>")
@require("incident.read")
@blp.response(200, IncidentDetailSchema)
@blp.alt_response(404, schema=ProblemSchema, content_type=PROBLEM_MIME, description="incident.not_found")
def get_incident(incident_id):
    """Return one incident with its notes and full revision history."""
    incident = incidents.incident_in_scope(incident_id, scope_prefix(g.user))
    incident.history = incidents.revisions(incident)
    return incident
