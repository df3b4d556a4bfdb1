from flask import g
from flask_smorest import Blueprint

from gridapp.api.security import require
from gridapp.schemas.areas import AreaListArgs, AreaSchema
from gridapp.services.access import scope_prefix
from gridapp.services.areas import area_by_code, areas_in_scope

blp = Blueprint("areas", __name__, url_prefix="/api/v1/areas", description="Administrative areas")


@blp.route("")
@require("area.read")
@blp.arguments(AreaListArgs, location="query")
@blp.response(200, AreaSchema(many=True))
def list_areas(args):
    """List the areas inside the caller's area (county, townships, villages)."""
    return areas_in_scope(scope_prefix(g.principal), level=args.get("level"), parent_code=args.get("parent"))


@blp.route("/<string:code>")
@require("area.read")
@blp.response(200, AreaSchema)
def get_area(code):
    """Return one area inside the caller's area."""
    return area_by_code(code, scope_prefix(g.principal))
