from flask import Response, current_app, g, json, request, url_for
from flask_smorest import Blueprint

from geo.grid import is_cell_code
from gridapp.api.security import require
from gridapp.errors import PROBLEM_MIME, ValidationFailed
from gridapp.schemas.common import ProblemSchema
from gridapp.schemas.grids import CellCollectionSchema, CellFeatureSchema, CellPageArgs, LocateArgs, LocateResultSchema
from gridapp.services import grids
from gridapp.services.access import scope_prefix

blp = Blueprint("grids", __name__, url_prefix="/api/v1/grids", description="The grid registry")

GEOJSON = "application/geo+json"


@blp.route("/cells")
@require("grid.read")
@blp.arguments(CellPageArgs, location="query")
@blp.response(200, CellCollectionSchema, content_type=GEOJSON)
def list_cells(args):
    """List current cells in the caller's area (and bbox) as RFC 7946 GeoJSON, paged by code."""
    limit = min(args.get("limit", current_app.config["CELLS_PAGE_DEFAULT"]), current_app.config["CELLS_PAGE_MAX"])
    page = grids.cells_page(scope_prefix(g.principal), limit, bbox=args.get("bbox"), after=args.get("after"))
    links = []
    if page.next_after:
        query = {**request.args.to_dict(), "after": page.next_after, "limit": limit}
        links.append({"rel": "next", "type": GEOJSON, "href": url_for(".list_cells", _external=True, **query)})
    # The features arrive as JSON text from PostgreSQL; splice them rather than parse and re-dump.
    body = '{"type":"FeatureCollection","features":[%s],"numberReturned":%d,"links":%s}' % (
        ",".join(page.features), len(page.features), json.dumps(links))
    return Response(body, mimetype=GEOJSON)


@blp.route("/cells/<string:code>")
@require("grid.read")
@blp.response(200, CellFeatureSchema, content_type=GEOJSON)
@blp.alt_response(404, schema=ProblemSchema, content_type=PROBLEM_MIME, description="grid.not_found")
def get_cell(code):
    """Return one current cell by its 15-digit code, with its grid workers."""
    if not is_cell_code(code):
        raise ValidationFailed(fields={"code": ["A cell code is 15 digits."]})
    feature = grids.cell_feature(scope_prefix(g.principal), code)
    return Response(json.dumps(feature), mimetype=GEOJSON)


@blp.route("/locate")
@require("grid.read")
@blp.arguments(LocateArgs, location="query")
@blp.response(200, LocateResultSchema)
@blp.alt_response(404, schema=ProblemSchema, content_type=PROBLEM_MIME, description="grid.not_found: the point is in no cell of your area")
def locate(args):
    """Return the cell containing a point; a point on a shared edge goes to the lowest code."""
    return grids.locate(scope_prefix(g.principal), args["lon"], args["lat"], args["crs"])
