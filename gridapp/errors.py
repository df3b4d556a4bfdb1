"""The error catalogue and the one handler that turns every error into application/problem+json.

Every code the API can answer with is listed here once, with when it happens. Codes are stable:
clients and tests match on `code`, never on message text.
"""
import logging

from flask import current_app, jsonify
from marshmallow import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy.exc import DBAPIError, OperationalError
from werkzeug.exceptions import HTTPException

from geo.errors import GeometryError

log = logging.getLogger(__name__)

PROBLEM_MIME = "application/problem+json"


class AppError(Exception):
    """Base for errors shown to API clients. Subclasses set code, http_status and default_message."""

    code = "internal"
    http_status = 500
    default_message = "Internal error."

    def __init__(self, message: str | None = None, **details):
        self.message = message or self.default_message
        self.details = details
        super().__init__(self.message)


# --- generic ----------------------------------------------------------------------------------
class BadRequest(AppError):  # malformed request: unparsable JSON, wrong content type for a body
    code, http_status, default_message = "bad_request", 400, "The request could not be understood."


class ValidationFailed(AppError):  # well-formed request whose fields are wrong; details.fields says which
    code, http_status, default_message = "validation_error", 422, "Some fields are invalid."


class NotFound(AppError):  # no such route, or an object the caller may not see (never 403 for those)
    code, http_status, default_message = "not_found", 404, "Not found."


class MethodNotAllowed(AppError):  # the route exists but not with this method
    code, http_status, default_message = "method_not_allowed", 405, "Method not allowed."


class PayloadTooLarge(AppError):  # body above MAX_CONTENT_LENGTH; details.limit_bytes says the limit
    code, http_status, default_message = "payload_too_large", 413, "The request body is too large."


class UnsupportedMediaType(AppError):  # body is not application/json where JSON is required
    code, http_status, default_message = "unsupported_media_type", 415, "Unsupported media type."


class Conflict(AppError):  # the request contradicts stored data (a unique value already taken)
    code, http_status, default_message = "conflict", 409, "The request conflicts with stored data."


class ServiceUnavailable(AppError):  # the database or Redis cannot be reached; retry later
    code, http_status, default_message = "service_unavailable", 503, "A required service is unavailable."


# --- authentication and authorization -------------------------------------------------------
class AuthRequired(AppError):  # no bearer token, or it is unknown, expired or revoked
    code, http_status, default_message = "auth.required", 401, "A valid bearer token is required."


class InvalidCredentials(AppError):  # wrong username or password, or the user is disabled
    code, http_status, default_message = "auth.invalid_credentials", 401, "Wrong username or password."


class Forbidden(AppError):  # the user's role may not use this endpoint at all
    code, http_status, default_message = "auth.forbidden", 403, "Your role may not do this."


# --- domain ------------------------------------------------------------------------------------
class GridNotFound(NotFound):  # no current cell with this code in the caller's area, or no cell at a point
    code, default_message = "grid.not_found", "No grid cell found."


class AreaNotFound(NotFound):  # no administrative area with this code in the caller's area
    code, default_message = "area.not_found", "No administrative area found."


class CategoryNotFound(NotFound):  # no event category with this standard/kind/code
    code, default_message = "category.not_found", "No event category found."


class IncidentNotFound(NotFound):  # no incident with this id in the caller's area
    code, default_message = "incident.not_found", "No incident found."


class GridImportRejected(AppError):  # the topology check found errors; details.report lists them
    code, http_status, default_message = "grid.import_rejected", 422, "The grid file failed the topology check."


class CatalogueInvalid(AppError):  # a category catalogue file has bad rows; details.rows lists them
    code, http_status, default_message = "category.invalid_catalogue", 422, "The category catalogue is invalid."


# --- case workflow --------------------------------------------------------------------------------
class InvalidTransition(Conflict):  # the action is not possible from the case's current status
    code, default_message = "workflow.invalid_transition", "This action is not possible in the case's current status."


class ReasonRequired(AppError):  # the action needs a reason (return, reject, rework, …)
    code, http_status, default_message = "workflow.reason_required", 422, "This action requires a reason."


class NotAssignee(Conflict):  # the case is assigned to another squad, or the task to another worker
    code, default_message = "workflow.not_assignee", "This case (or task) is assigned to someone else."


class WorkflowInputInvalid(AppError):  # a parameter of the action is missing or wrong (squad, master case, …)
    code, http_status, default_message = "workflow.invalid_input", 422, "The action's parameters are invalid."


# --- offline sync ------------------------------------------------------------------------------
class DeviceRevoked(Forbidden):  # the device was revoked: every call is refused; the phone wipes its data
    code, default_message = "sync.device_revoked", "This device has been revoked."


class DeviceDraining(Forbidden):  # a draining device may push what it holds but pulls nothing more
    code, default_message = "sync.device_draining", "This device is draining: push pending work, then sign out."


class DeviceTokenRequired(AuthRequired):  # a sync endpoint called with a user token instead of a device token
    code, default_message = "sync.device_token_required", "This endpoint needs a device token."


class CursorInvalid(AppError):  # a pull cursor that is malformed, forged or for another device
    code, http_status, default_message = "sync.cursor_invalid", 400, "The cursor is not valid for this device."


class ProtocolUnsupported(AppError):  # a protocol version this server does not speak
    code, http_status, default_message = "sync.protocol_unsupported", 400, "Unsupported protocol version."


class ReviewItemNotFound(NotFound):  # no open quarantine item or conflict with this id in the caller's area
    code, default_message = "sync.review_item_not_found", "No such quarantine item or conflict."


class ReviewItemClosed(Conflict):  # the quarantine item or conflict was already resolved
    code, default_message = "sync.review_item_closed", "This item was already resolved."


# --- photos (tus uploads, downloads, image checks; docs/photos.md) ----------------------------------
class TusVersionUnsupported(AppError):  # Tus-Resumable missing or not 1.0.0 on a tus request
    code, http_status, default_message = "photo.tus_version", 412, "This server speaks tus 1.0.0 (Tus-Resumable)."


class UploadNotFound(NotFound):  # no upload with this id for this uploader (or it finished or was terminated)
    code, default_message = "photo.upload_not_found", "No such upload."


class UploadOffsetMismatch(Conflict):  # a PATCH at another offset than the stored one; details.current_offset
    code, default_message = "photo.offset_mismatch", "Upload-Offset does not match the upload's offset."


class UploadExpired(AppError):  # the upload was untouched past Upload-Expires; start a new one
    code, http_status, default_message = "photo.upload_expired", 410, "This upload has expired."


class ChunkChecksumMismatch(AppError):  # the chunk's Upload-Checksum did not match its bytes; it was discarded
    code, http_status, default_message = "photo.checksum_mismatch", 460, "The chunk's checksum does not match."


class PhotoHashMismatch(AppError):  # the whole file's SHA-256 differs from the declared one; the upload restarts
    code, http_status, default_message = "photo.hash_mismatch", 422, "The file's SHA-256 is not the declared one."


class NotAnImage(AppError):  # the bytes are not JPEG, PNG or WebP (decided by sniffing, not by the name)
    code, http_status, default_message = "photo.not_an_image", 415, "Only JPEG, PNG and WebP photos are accepted."


class InvalidImage(AppError):  # an accepted type that does not decode (truncated or corrupt)
    code, http_status, default_message = "photo.invalid_image", 422, "The image is truncated or corrupt."


class TooManyPixels(AppError):  # width × height above PHOTO_MAX_PIXELS (decompression bombs); details.limit_pixels
    code, http_status, default_message = "photo.too_many_pixels", 422, "The image has too many pixels."


class PhotoNotFound(NotFound):  # no such photo (or rendition yet) on an incident the caller may see
    code, default_message = "photo.not_found", "No such photo."


class RangeNotSatisfiable(AppError):  # a Range outside the photo's bytes; details.size says how many there are
    code, http_status, default_message = "photo.range_not_satisfiable", 416, "The range is outside the photo."


class PhotoImmutable(Conflict):  # an attachment_id already declared with other bytes, type or incident
    code, default_message = "photo.immutable", "This attachment is already bound to other content."


class AfterPhotoRequired(AppError):  # completing a case needs an after-handling photo (WORKFLOW_REQUIRE_AFTER_PHOTO)
    code, http_status, default_message = ("workflow.after_photo_required", 422,
                                          "This action needs an after-handling (处置后) photo.")
# --- dashboard (gridapp/dashboard/) -------------------------------------------------------------
class CsrfFailed(Forbidden):  # a dashboard POST without this session's CSRF token (a forged or stale form)
    code, default_message = "dashboard.csrf_failed", "The form's security token is missing or expired; reload the page."
# --- exports, evaluation and the OGC API (issue 7) ----------------------------------------------------
class ExportTooLarge(AppError):  # a direct export over EXPORT_MAX_DIRECT_ROWS: start an export job instead
    code, http_status, default_message = "export.too_large", 422, "Too many rows to stream; start an export job."


class UnmaskReasonRequired(AppError):  # an unmasked export without a stated reason
    code, http_status, default_message = "export.reason_required", 422, "State why you need unmasked personal data."


class ExportNotFound(NotFound):  # no export job with this id for this user
    code, default_message = "export.not_found", "No such export job."


class ExportNotReady(Conflict):  # the export job has not finished (or failed): nothing to download yet
    code, default_message = "export.not_ready", "The export is not ready."


class ExportLinkInvalid(AppError):  # a download link with a forged, mangled or expired signature
    code, http_status, default_message = "export.link_invalid", 403, "This download link is invalid or expired."


class CollectionNotFound(NotFound):  # an OGC API collection that does not exist
    code, default_message = "ogc.collection_not_found", "No such collection."


# geo.errors.* keep their own codes (geo.invalid_geometry, geo.unsupported_crs, geo.crs_required,
# geo.unreadable_file, geo.outside_china) and all map to 422.
GEO_ERROR_STATUS = 422

_HTTP_CODES = {400: BadRequest, 401: AuthRequired, 403: Forbidden, 404: NotFound, 405: MethodNotAllowed,
               409: Conflict, 413: PayloadTooLarge, 415: UnsupportedMediaType, 422: ValidationFailed}


def problem(code: str, status: int, message: str, details: dict | None = None):
    """Build the one error response shape (RFC 9457 with our code, message and details)."""
    body = {
        "type": f"urn:gridapp:problem:{code}",
        "title": code,
        "status": status,
        "code": code,
        "message": message,
        "detail": message,
        "details": details or {},
    }
    response = jsonify(body)
    response.status_code = status
    response.mimetype = PROBLEM_MIME
    return response


def _from_http_exception(exc: HTTPException):
    # flask-smorest/webargs abort(422, messages=...) on bad arguments: surface the field messages.
    data = getattr(exc, "data", None) or {}
    messages = data.get("messages")
    if exc.code == 413:
        return PayloadTooLarge(limit_bytes=current_app.config["MAX_CONTENT_LENGTH"])
    cls = _HTTP_CODES.get(exc.code)
    if cls is None:
        return None
    if messages is not None:
        return ValidationFailed(fields=_flatten_locations(messages))
    return cls(exc.description if cls is not NotFound else None)


def _flatten_locations(messages: dict) -> dict:
    # webargs nests messages by location ({"query": {"bbox": [...]}}); clients want the field names.
    flat = {}
    for location, fields in messages.items():
        if isinstance(fields, dict):
            flat.update(fields)
        else:
            flat[location] = fields
    return flat


def register_error_handlers(app):
    """Map every exception to a problem+json response; never leak a traceback."""
    # A refused request changes nothing and holds nothing: roll back before answering, so no half-done
    # work or row lock outlives the error (whatever the session's lifetime).
    @app.errorhandler(AppError)
    def handle_app_error(exc: AppError):
        _rollback_quietly()
        return problem(exc.code, exc.http_status, exc.message, exc.details)

    @app.errorhandler(ValidationError)
    def handle_validation_error(exc: ValidationError):
        _rollback_quietly()
        return problem(ValidationFailed.code, 422, ValidationFailed.default_message, {"fields": exc.messages})

    @app.errorhandler(GeometryError)
    def handle_geometry_error(exc: GeometryError):
        _rollback_quietly()
        return problem(exc.code, GEO_ERROR_STATUS, exc.message, exc.details)

    @app.errorhandler(HTTPException)
    def handle_http_exception(exc: HTTPException):
        _rollback_quietly()
        mapped = _from_http_exception(exc)
        if mapped is None:
            return problem(f"http_{exc.code}", exc.code, exc.description or exc.name)
        return problem(mapped.code, mapped.http_status, mapped.message, mapped.details)

    @app.errorhandler(DBAPIError)
    @app.errorhandler(RedisConnectionError)
    def handle_dependency_error(exc: Exception):
        _rollback_quietly()
        if isinstance(exc, DBAPIError) and not exc.connection_invalidated and not _is_connection_error(exc):
            return handle_unexpected(exc)
        log.warning("dependency unavailable: %s", str(exc).splitlines()[0])
        return problem(ServiceUnavailable.code, 503, ServiceUnavailable.default_message)

    @app.errorhandler(Exception)
    def handle_unexpected(exc: Exception):
        # Roll back first so the failed transaction cannot leak into the next request.
        _rollback_quietly()
        log.exception("unhandled error")
        return problem(AppError.code, 500, AppError.default_message)


def _is_connection_error(exc: DBAPIError) -> bool:
    # psycopg raises OperationalError for refused or dropped connections (SQLSTATE class 08 or none).
    sqlstate = getattr(exc.orig, "sqlstate", None)
    return isinstance(exc, OperationalError) and (sqlstate is None or sqlstate.startswith("08"))


def _rollback_quietly() -> None:
    from gridapp.extensions import db

    try:
        db.session.rollback()
    except DBAPIError:  # the connection is gone; the pool discards it
        log.warning("rollback failed on a dead connection")
