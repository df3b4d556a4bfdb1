"""The JSON API under /api/v1 (flask-smorest blueprints; the OpenAPI document is generated from them)."""
import gzip
import zlib

from flask import current_app, request
from flask_smorest import Api

from gridapp.errors import PROBLEM_MIME, BadRequest, PayloadTooLarge, UnsupportedMediaType
from gridapp.schemas.common import ProblemSchema

API_PREFIX = "/api/v1/"
GZIP_MIN_BYTES = 1024
# Larger bodies (full sync pages: ~350 KB for 500 changes) at level 1: half the CPU of level 5 (2 ms instead of
# 4 per page) for ~14 % more bytes on the wire (46 KB instead of 40).
GZIP_FAST_BYTES = 64 * 1024
PUBLIC_ENDPOINTS = {"devices.register", "devices.refresh", "health.healthz", "auth.create_token", "api-docs.openapi_json", "static"}
PUBLIC_ENDPOINTS |= {"exports.download_export"}  # a signed, expiring link is the credential (issue 7)


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
    from gridapp.api import areas, auth, categories, devices, dispatch, grids, health, incidents, squads, sync, users
    from gridapp.api.photos import blp as photos_blp

    api.spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer"})
    for module in (health, auth, areas, grids, categories, squads, users, devices, sync, incidents, dispatch):
        api.register_blueprint(module.blp)
    api.register_blueprint(photos_blp)
    from gridapp.api import early_warning, evaluation, exports, ogc
    for module in (exports, evaluation, early_warning, ogc):  # issue 7
        api.register_blueprint(module.blp)
    from gridapp.api.security import RequestGlobals

    app.app_ctx_globals_class = RequestGlobals  # g.user and g.token load on first use (security.py)
    app.before_request(check_json_body)
    app.after_request(gzip_response)


def check_json_body():
    """Inflate gzip bodies (bounded), then refuse bodies that are not JSON (415) or not parsable (400)."""
    if request.method not in ("POST", "PUT", "PATCH") or not request.path.startswith(API_PREFIX):
        return
    if not request.content_length or request.mimetype == "application/offset+octet-stream":
        return  # no body, or tus photo bytes (streamed by their view, never parsed)
    if request.headers.get("Content-Encoding", "").lower() == "gzip":
        # Werkzeug reads the body from the cached data from now on.
        request._cached_data = inflate(request.get_data(), current_app.config["SYNC_MAX_INFLATED_BYTES"])
    if not request.is_json:
        raise UnsupportedMediaType("The body must be application/json.", content_type=request.mimetype)
    if request.get_json(silent=True) is None:
        raise BadRequest("The body is not valid JSON.")


def inflate(body: bytes, limit: int) -> bytes:
    """Gunzip a request body, refusing to inflate past `limit` bytes (a gzip bomb costs nothing)."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest("The gzip body is corrupt.") from exc
    if len(data) > limit:
        raise PayloadTooLarge(f"The body inflates beyond {limit} bytes.", limit_bytes=limit)
    if not inflater.eof:
        raise BadRequest("The gzip body is truncated.")
    return data


def gzip_response(response):
    """Compress larger JSON answers for clients that accept gzip (phones on 2G/3G links)."""
    if (response.direct_passthrough or response.status_code < 200 or response.status_code >= 300
            or "gzip" not in request.headers.get("Accept-Encoding", "") or response.headers.get("Content-Encoding")
            or not (response.mimetype or "").endswith("json")):
        return response
    data = response.get_data()
    if len(data) < GZIP_MIN_BYTES:
        return response
    response.set_data(gzip.compress(data, compresslevel=1 if len(data) > GZIP_FAST_BYTES else 5))
    response.headers["Content-Encoding"] = "gzip"
    response.headers.add("Vary", "Accept-Encoding")
    return response
