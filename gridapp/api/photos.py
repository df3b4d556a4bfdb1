"""Photos over HTTP: tus 1.0 uploads (core, creation, checksum, expiration, termination), downloads with
ETag and Range, and the list of photos a phone's user declared that the server still lacks."""
import base64
import binascii
import hashlib
import logging
from datetime import UTC
from email.utils import format_datetime

from flask import Response, current_app, g, request, url_for
from flask_smorest import Blueprint
from redis.exceptions import RedisError

from gridapp.api.security import require
from gridapp.errors import (
    PROBLEM_MIME,
    BadRequest,
    PayloadTooLarge,
    RangeNotSatisfiable,
    TusVersionUnsupported,
    UnsupportedMediaType,
)
from gridapp.extensions import db
from gridapp.jobs import enqueue
from gridapp.jobs.photos import derive_photo
from gridapp.schemas.common import ProblemSchema
from gridapp.schemas.photos import SHA256_HEX, MissingPhotoSchema
from gridapp.services import photos
from gridapp.services.access import scope_prefix

log = logging.getLogger(__name__)
blp = Blueprint("photos", __name__, url_prefix="/api/v1/photos", description="Photos: tus uploads and downloads")

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,checksum,expiration,termination"
CHECKSUM_ALGORITHMS = ("sha256", "sha1", "md5")
OFFSET_MIME = "application/offset+octet-stream"
IMMUTABLE_CACHE = "private, max-age=31536000, immutable"


def _problem(status: int, codes: str):
    return blp.alt_response(status, schema=ProblemSchema, content_type=PROBLEM_MIME, description=codes)


@blp.after_request
def tus_headers(response):
    """Every answer of these endpoints says which tus this server speaks."""
    response.headers["Tus-Resumable"] = TUS_VERSION
    response.headers["Tus-Version"] = TUS_VERSION
    response.headers["Tus-Extension"] = TUS_EXTENSIONS
    response.headers["Tus-Max-Size"] = str(current_app.config["PHOTO_MAX_BYTES"])
    response.headers["Tus-Checksum-Algorithm"] = ",".join(CHECKSUM_ALGORITHMS)
    return response


def _check_tus() -> None:
    if request.headers.get("Tus-Resumable") != TUS_VERSION:
        raise TusVersionUnsupported(supported=[TUS_VERSION])


def _int_header(name: str) -> int:
    value = request.headers.get(name, "")
    if not value.isdigit():
        raise BadRequest(f"{name} must be a non-negative integer.", header=name)
    return int(value)


def _metadata() -> dict[str, str]:
    """Parse Upload-Metadata: comma-separated `key base64value` pairs."""
    out = {}
    for pair in filter(None, (p.strip() for p in request.headers.get("Upload-Metadata", "").split(","))):
        key, _, value = pair.partition(" ")
        try:
            out[key] = base64.b64decode(value, validate=True).decode() if value else ""
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise BadRequest("Upload-Metadata values must be base64.", key=key) from exc
    return out


def _uploader() -> str:
    return photos.uploader_of(g.user, g.token)


def _upload_headers(response: Response, upload) -> Response:
    response.headers["Upload-Offset"] = str(upload.offset)
    response.headers["Upload-Length"] = str(upload.length)
    response.headers["Upload-Expires"] = format_datetime(upload.expires_at.astimezone(UTC), usegmt=True)
    response.headers["Cache-Control"] = "no-store"
    return response


@blp.route("/uploads", methods=["POST"])
@require("photo.upload")
@blp.response(201, description="Created: Location names the upload; send its bytes with PATCH")
@blp.alt_response(200, description="The server already has these bytes (Blob-Exists: 1); nothing to send")
@_problem(400, "bad_request: Upload-Length or Upload-Metadata (sha256) missing or malformed")
@_problem(412, "photo.tus_version")
@_problem(413, "payload_too_large (details.limit_bytes)")
def create_upload():
    """tus creation: `Upload-Length` and `Upload-Metadata: sha256 <base64 of the hex digest>`.

    If a verified photo with that SHA-256 exists the answer is 200 with `Upload-Offset` = length and
    `Blob-Exists: 1`: nothing needs sending, and declarations of that hash are already bound.
    """
    _check_tus()
    length = _int_header("Upload-Length")
    if length < 1:
        raise BadRequest("Upload-Length must be at least 1.")
    sha256 = _metadata().get("sha256", "").lower()
    try:
        SHA256_HEX(sha256)
    except Exception as exc:  # marshmallow's ValidationError: answer in terms of the header
        raise BadRequest("Upload-Metadata must carry sha256 (64 hex digits, base64-encoded).") from exc
    upload, blob = photos.create_upload(g.user, _uploader(), sha256, length)
    if blob is not None:
        db.session.commit()
        response = Response(status=200)
        response.headers.update({"Upload-Offset": str(blob.size), "Upload-Length": str(blob.size), "Blob-Exists": "1"})
        return response
    db.session.commit()
    response = _upload_headers(Response(status=201), upload)
    response.headers["Location"] = url_for("photos.patch_upload", upload_id=upload.id)
    return response


@blp.route("/uploads/<uuid:upload_id>", methods=["HEAD"])
@require("photo.upload")
def head_upload(upload_id):
    """tus core: where to resume (Upload-Offset) and the upload's length and expiry."""
    _check_tus()
    upload = photos.upload_for(upload_id, _uploader())
    response = _upload_headers(Response(status=200), upload)
    db.session.commit()
    return response


@blp.route("/uploads/<uuid:upload_id>", methods=["PATCH"])
@require("photo.upload")
@blp.response(204, description="Stored; Upload-Offset is the new offset (= Upload-Length when complete)")
@_problem(404, "photo.upload_not_found")
@_problem(409, "photo.offset_mismatch (details.current_offset)")
@_problem(410, "photo.upload_expired")
@_problem(412, "photo.tus_version")
@_problem(413, "payload_too_large (details.limit_bytes), sent before the body is read")
@_problem(415, "unsupported_media_type (Content-Type), photo.not_an_image (sniffed from the first bytes)")
@_problem(422, "photo.hash_mismatch (the upload restarts at 0), photo.invalid_image, photo.too_many_pixels")
@_problem(460, "photo.checksum_mismatch: the chunk was discarded; send it again")
def patch_upload(upload_id):
    """tus core + checksum: append `Content-Type: application/offset+octet-stream` bytes at `Upload-Offset`,
    optionally with `Upload-Checksum: sha256 <base64 digest of this chunk>`."""
    _check_tus()
    if request.mimetype != OFFSET_MIME:
        raise UnsupportedMediaType(f"PATCH bodies are {OFFSET_MIME}.", content_type=request.mimetype)
    offset = _int_header("Upload-Offset")
    limit = current_app.config["PHOTO_MAX_CHUNK_BYTES"]
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"A chunk may have at most {limit} bytes.", limit_bytes=limit)
    new_offset, sha256 = photos.append_chunk(upload_id, _uploader(), offset, request.stream, request.content_length,
                                             _checksum())
    if sha256:
        _enqueue_derive(sha256)
    response = Response(status=204)
    response.headers["Upload-Offset"] = str(new_offset)
    return response


def _checksum() -> tuple[str, bytes] | None:
    header = request.headers.get("Upload-Checksum")
    if not header:
        return None
    algorithm, _, value = header.partition(" ")
    if algorithm not in CHECKSUM_ALGORITHMS:
        raise BadRequest("Unsupported checksum algorithm.", supported=list(CHECKSUM_ALGORITHMS))
    try:
        digest = base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise BadRequest("Upload-Checksum must be base64.") from exc
    if len(digest) != hashlib.new(algorithm).digest_size:
        raise BadRequest("Upload-Checksum has the wrong length for its algorithm.")
    return algorithm, digest


def _enqueue_derive(sha256: str) -> None:
    try:
        enqueue(derive_photo, sha256, job_id=f"derive-{sha256}")
    except RedisError:  # the sweep job derives what is still missing
        log.warning("could not enqueue derive for %s; the photo sweep will", sha256)


@blp.route("/uploads/<uuid:upload_id>", methods=["DELETE"])
@require("photo.upload")
@blp.response(204, description="Terminated: the upload and its bytes are gone")
@_problem(404, "photo.upload_not_found")
@_problem(412, "photo.tus_version")
def delete_upload(upload_id):
    """tus termination."""
    _check_tus()
    photos.terminate_upload(upload_id, _uploader())
    db.session.commit()
    return Response(status=204)


@blp.route("/missing")
@require("sync.pull")
@blp.response(200, MissingPhotoSchema(many=True))
def missing():
    """The photos this user declared (from any install of the app) whose bytes the server still lacks."""
    return photos.missing_photos(g.user)


@blp.route("/<string:sha256>/<string:variant>")
@require("photo.read")
@blp.response(200, description="The image (206 for a Range; 304 when If-None-Match matches)",
              content_type="image/jpeg")
@_problem(404, "photo.not_found")
@_problem(416, "photo.range_not_satisfiable")
def download(sha256, variant):
    """Download a photo: `original` (byte-exact, as uploaded), `display` or `thumbnail` (EXIF-free JPEGs).

    Scope-checked like incidents (404 outside the caller's area). `ETag` is the hash; `Range` is
    honoured (one range); blobs are immutable, so they are cacheable for a year.
    """
    return send_photo(sha256, variant, g.user)


def send_photo(sha256: str, variant: str, user, variants=photos.VARIANTS) -> Response:
    """The download response for a photo the user may see (also used by the dashboard, which shows only
    the EXIF-free renditions): 404 outside the user's area, ETag, one Range, immutable caching."""
    if variant not in variants:
        raise photos.PhotoNotFound(variant=variant)
    blob = photos.visible_blob(sha256.lower(), user, scope_prefix(user))
    key, size, mime = photos.rendition(blob, variant)
    db.session.commit()
    etag = blob.sha256 if variant == "original" else f"{blob.sha256}-{variant}"
    if request.if_none_match.contains(etag):
        return _cacheable(Response(status=304), etag)
    start, end, status = 0, size, 200
    byte_range = request.range
    one_range = byte_range is not None and byte_range.units == "bytes" and len(byte_range.ranges) == 1
    if one_range and (not request.if_range.etag or request.if_range.etag == etag):  # else: the whole photo
        bounds = byte_range.range_for_length(size)
        if bounds is None:
            raise RangeNotSatisfiable(size=size)
        (start, end), status = bounds, 206
    response = Response(photos.iter_range(key, start, end), status=status, mimetype=mime, direct_passthrough=True)
    response.headers["Content-Length"] = str(end - start)
    response.headers["Accept-Ranges"] = "bytes"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if status == 206:
        response.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return _cacheable(response, etag)


def _cacheable(response: Response, etag: str) -> Response:
    response.set_etag(etag)
    response.headers["Cache-Control"] = IMMUTABLE_CACHE
    return response
