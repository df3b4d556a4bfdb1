from flask import g
from flask_smorest import Blueprint

from gridapp.api.security import require
from gridapp.schemas.squads import TeamSchema
from gridapp.services.access import scope_prefix
from gridapp.services.squads import teams_in_scope

blp = Blueprint("squads", __name__, url_prefix="/api/v1/teams", description="Law-enforcement teams and squads")


@blp.route("")
@require("squad.read")
@blp.response(200, TeamSchema(many=True))
def list_teams():
    """List the law-enforcement teams in the caller's area, with their squads and covered areas."""
    return teams_in_scope(scope_prefix(g.principal))
