from flask_smorest import Blueprint
from marshmallow import Schema, fields

from gridapp.services.health import check_health

blp = Blueprint("health", __name__, description="Liveness and readiness")


class HealthSchema(Schema):
    status = fields.String(metadata={"description": "ok, or down"})
    down = fields.List(fields.String(), metadata={"description": "components that are down"})
    components = fields.Dict()


@blp.route("/healthz")
@blp.doc(security=[])
@blp.response(200, HealthSchema)
@blp.alt_response(503, schema=HealthSchema, description="Some component is down; `down` names it.")
def healthz():
    """Report the state of the database, PostGIS, Redis and the RQ workers."""
    ok, components = check_health()
    down = sorted(name for name, state in components.items() if state["status"] != "up")
    return {"status": "ok" if ok else "down", "down": down, "components": components}, 200 if ok else 503
