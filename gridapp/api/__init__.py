"""The JSON API under /api/v1 (flask-smorest blueprints; the OpenAPI document is generated from them)."""
from flask_smorest import Api

PUBLIC_ENDPOINTS = {"health.healthz", "auth.create_token", "api-docs.openapi_json", "static"}


def register_api(app, api: Api):
    """Register every API blueprint and the bearer security scheme."""
    from gridapp.api import areas, auth, categories, grids, health, squads, users

    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    for module in (health, auth, areas, grids, categories, squads, users):
        api.register_blueprint(module.blp)
