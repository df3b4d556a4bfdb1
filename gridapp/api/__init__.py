"""The JSON API under /api/v1 (flask-smorest blueprints; the OpenAPI document is generated from them)."""
from flask import request
from flask_smorest import Api

from gridapp.errors import PROBLEM_MIME, BadRequest, UnsupportedMediaType
from gridapp.schemas.common import ProblemSchema

API_PREFIX = "/api/v1/"
PUBLIC_ENDPOINTS = {"health.healthz", "auth.create_token", "api-docs.openapi_json", "static"}


class GridApi(Api):
    """flask-smorest's Api, documenting every error response as application/problem+json."""

    ERROR_SCHEMA = ProblemSchema

    def _register_responses(self):
        # The stock method registers the per-status error responses with the default content type.
        self.DEFAULT_RESPONSE_CONTENT_TYPE = PROBLEM_MIME
        try:
            super()._register_responses()
        finally:
            del self.DEFAULT_RESPONSE_CONTENT_TYPE


def register_api(app, api: Api):
    """Register every API blueprint, the bearer security scheme and the JSON body check."""
    from gridapp.api import areas, auth, categories, grids, health, squads, users

    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    for module in (health, auth, areas, grids, categories, squads, users):
        api.register_blueprint(module.blp)
    app.before_request(check_json_body)


def check_json_body():
    """Refuse API bodies that are not JSON (415) or not parsable (400) before any view runs."""
    if request.method not in ("POST", "PUT", "PATCH") or not request.path.startswith(API_PREFIX):
        return
    if not request.content_length:
        return
    if not request.is_json:
        raise UnsupportedMediaType("The body must be application/json.", content_type=request.mimetype)
    if request.get_json(silent=True) is None:
        raise BadRequest("The body is not valid JSON.")
