"""Photos: declared by hash on incidents, uploaded with tus into storage, verified, bound, derived, collected.

Bytes are never held whole in memory: a PATCH body streams into a storage part; at the last byte the
parts stream once through SHA-256 into a temporary file that Pillow decodes (bounded by the pixel
limit) and that is then streamed into the blob's key. Database transactions are never held open
while bytes travel over a slow link.
"""
import hashlib
import secrets
import tempfile
import uuid
import warnings
from collections.abc import Iterable, Iterator
from datetime import timedelta

from flask import current_app
from PIL import Image, ImageOps, UnidentifiedImageError
from sqlalchemy import delete, exists, select, text, update
from sqlalchemy.dialects.postgresql import insert
from werkzeug.exceptions import ClientDisconnected

from gridapp.errors import (
    ChunkChecksumMismatch,
    InvalidImage,
    NotAnImage,
    PayloadTooLarge,
    PhotoHashMismatch,
    PhotoImmutable,
    PhotoNotFound,
    TooManyPixels,
    UploadExpired,
    UploadNotFound,
    UploadOffsetMismatch,
)
from gridapp.extensions import db
from gridapp.models import AdminArea, Incident, IncidentPhoto, PhotoBlob, PhotoUpload, User, utcnow
from gridapp.services import incidents as incidents_
from gridapp.services.scope import current_scope
from gridapp.storage import CHUNK, storage

# Pillow warns between 1× and 2× its pixel limit and raises above: make both a hard error.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

# What is accepted, decided by the bytes: magic numbers first, then a full decode by Pillow.
PIL_FORMATS = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
VARIANTS = ("original", "display", "thumbnail")
PHOTO_URL = "/api/v1/photos/{sha256}/{variant}"
SNIFF_BYTES = 12


def init_app(app) -> None:
    """Make Pillow's own pixel limit ours: above it Image.open refuses (warning promoted to an error)."""
    Image.MAX_IMAGE_PIXELS = app.config["PHOTO_MAX_PIXELS"]


def sniff(head: bytes) -> str | None:
    """Return the image type the first bytes announce (JPEG, PNG, WebP), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def blob_key(sha256: str) -> str:
    return f"blobs/{sha256[:2]}/{sha256}"


def derived_key(sha256: str, variant: str) -> str:
    return f"derived/{sha256[:2]}/{sha256}/{variant}.jpg"


def _lock_hash(sha256: str) -> None:
    # Declaring, binding and collecting one hash take turns, so a declaration never misses a blob
    # committed beside it and a blob is never collected under a new declaration.
    db.session.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:sha, 42))"), {"sha": sha256})


# --- declaring photos on incidents ------------------------------------------------------------------
def check_declarable(incident_id: uuid.UUID, spec: dict) -> None:
    """Check that declaring this photo changes nothing already declared.

    :raises PhotoImmutable: the attachment_id is declared with another hash, type or incident.
    """
    existing = db.session.get(IncidentPhoto, spec["attachment_id"])
    if existing is not None and (existing.incident_id, existing.sha256, existing.photo_type) != (
            incident_id, spec["sha256"], spec["type"]):
        raise PhotoImmutable(attachment_id=str(existing.id), declared_sha256=existing.sha256)


def declare_photo(incident: Incident, spec: dict, *, user: User, device_id=None, event_id: int | None = None,
                  ) -> IncidentPhoto:
    """Declare one photo (attachment_id, sha256, size, type, mime?) on an incident; bind it if its blob is here.

    Idempotent for the same declaration; an attachment_id is immutable once declared.

    :raises PhotoImmutable: the attachment_id is already declared with another hash, type or incident.
    """
    sha256 = spec["sha256"]
    check_declarable(incident.id, spec)
    existing = db.session.get(IncidentPhoto, spec["attachment_id"])
    if existing is not None:
        return existing
    _lock_hash(sha256)
    photo = IncidentPhoto(id=spec["attachment_id"], incident_id=incident.id, photo_type=spec["type"], sha256=sha256,
                          size=spec["size"], mime=spec.get("mime"), declared_by_id=user.id, device_id=device_id,
                          event_id=event_id)
    if db.session.get(PhotoBlob, sha256) is not None:
        photo.blob_sha256, photo.bound_at = sha256, utcnow()
    db.session.add(photo)
    db.session.flush()
    return photo


def copy_photos(source: Incident, target: Incident) -> int:
    """Declare a merged duplicate's photos on its master too (same blobs, ids derived from the master's)."""
    copied = 0
    for photo in db.session.scalars(select(IncidentPhoto).where(IncidentPhoto.incident_id == source.id)):
        copy_id = uuid.uuid5(target.id, str(photo.id))
        if db.session.get(IncidentPhoto, copy_id) is None:
            db.session.add(IncidentPhoto(
                id=copy_id, incident_id=target.id, photo_type=photo.photo_type, sha256=photo.sha256, size=photo.size,
                mime=photo.mime, blob_sha256=photo.blob_sha256, problem=photo.problem, bound_at=photo.bound_at,
                declared_by_id=photo.declared_by_id, device_id=photo.device_id))
            copied += 1
    db.session.flush()
    return copied


def photo_state(photo: IncidentPhoto) -> str:
    """present (bytes verified and bound), refused (the bytes failed the image checks) or missing."""
    if photo.blob_sha256:
        return "present"
    return "refused" if photo.problem else "missing"


def has_photo(incident: Incident, photo_type: str, since=None) -> bool:
    """Tell whether the incident declares a photo of this type (optionally one declared since a time)."""
    query = select(IncidentPhoto.id).where(IncidentPhoto.incident_id == incident.id,
                                           IncidentPhoto.photo_type == photo_type)
    if since is not None:
        query = query.where(IncidentPhoto.created_at >= since)
    return db.session.scalar(query.limit(1)) is not None


def incident_photos(incident: Incident) -> list[dict]:
    """List an incident's photos for the dashboard and the API: state and the URLs of each rendition.

    `display` and `thumbnail` are None until the derive job has made them.
    """
    rows = db.session.execute(
        select(IncidentPhoto, PhotoBlob.derived_at).outerjoin(PhotoBlob, PhotoBlob.sha256 == IncidentPhoto.blob_sha256)
        .where(IncidentPhoto.incident_id == incident.id).order_by(IncidentPhoto.created_at, IncidentPhoto.id)).all()
    out = []
    for photo, derived_at in rows:
        state = photo_state(photo)
        urls = {variant: None for variant in VARIANTS}
        if state == "present":
            urls["original"] = PHOTO_URL.format(sha256=photo.sha256, variant="original")
            if derived_at is not None:
                urls["display"] = PHOTO_URL.format(sha256=photo.sha256, variant="display")
                urls["thumbnail"] = PHOTO_URL.format(sha256=photo.sha256, variant="thumbnail")
        out.append({"attachment_id": photo.id, "type": photo.photo_type, "sha256": photo.sha256, "size": photo.size,
                    "state": state, "problem": photo.problem, "declared_by": photo.declared_by.username,
                    "event_id": photo.event_id, "created_at": photo.created_at, "bound_at": photo.bound_at,
                    "urls": urls})
    return out


def missing_photos(user: User) -> list[IncidentPhoto]:
    """The photos this user declared (from any install) whose bytes the server still lacks."""
    return list(db.session.scalars(
        select(IncidentPhoto).where(IncidentPhoto.declared_by_id == user.id, IncidentPhoto.blob_sha256.is_(None),
                                    IncidentPhoto.problem.is_(None)).order_by(IncidentPhoto.created_at)))


# --- tus uploads ---------------------------------------------------------------------------------------
def uploader_of(user: User, token) -> str:
    """A phone uploads as its device; anyone else (a squad member's app) as their user."""
    return f"device:{token.device_id}" if token.device_id else f"user:{user.id}"


def _expiry():
    return utcnow() + timedelta(hours=current_app.config["PHOTO_UPLOAD_EXPIRY_HOURS"])


def create_upload(user: User, uploader: str, sha256: str, length: int) -> tuple[PhotoUpload | None, PhotoBlob | None]:
    """Start an upload, or answer that the blob is already here (then nothing needs sending).

    A retried creation by the same uploader returns the same upload; an expired one is replaced.

    :raises PayloadTooLarge: `length` above PHOTO_MAX_BYTES (before any byte is sent).
    """
    limit = current_app.config["PHOTO_MAX_BYTES"]
    if length > limit:
        raise PayloadTooLarge(f"A photo may have at most {limit} bytes.", limit_bytes=limit)
    blob = db.session.get(PhotoBlob, sha256)
    if blob is not None:
        return None, blob
    upload = db.session.scalar(select(PhotoUpload).where(PhotoUpload.uploader == uploader,
                                                         PhotoUpload.sha256 == sha256))
    if upload is not None and (upload.expires_at < utcnow() or upload.length != length):
        _discard_upload(upload)
        upload = None
    if upload is None:
        db.session.execute(insert(PhotoUpload).values(
            id=uuid.uuid4(), uploader=uploader, user_id=user.id, sha256=sha256, length=length, offset=0, parts=[],
            expires_at=_expiry()).on_conflict_do_nothing(constraint="uq_photo_uploads_uploader_sha256"))
        upload = db.session.scalar(select(PhotoUpload).where(PhotoUpload.uploader == uploader,
                                                             PhotoUpload.sha256 == sha256))
    return upload, None


def upload_for(upload_id: uuid.UUID, uploader: str) -> PhotoUpload:
    """Return an upload of this uploader; an expired one answers 410.

    :raises UploadNotFound: no such upload for this uploader.
    :raises UploadExpired: past its expiry.
    """
    upload = db.session.get(PhotoUpload, upload_id)
    if upload is None or upload.uploader != uploader:
        raise UploadNotFound(upload_id=str(upload_id))
    if upload.expires_at < utcnow():
        raise UploadExpired(expired_at=upload.expires_at.isoformat())
    return upload


def _discard_upload(upload: PhotoUpload) -> None:
    keys = [key for _, _, key in upload.parts]
    db.session.delete(upload)
    db.session.flush()
    for key in keys:
        storage().delete(key)


def terminate_upload(upload_id: uuid.UUID, uploader: str) -> None:
    """Delete an upload and its parts (tus termination)."""
    upload = db.session.get(PhotoUpload, upload_id)
    if upload is None or upload.uploader != uploader:
        raise UploadNotFound(upload_id=str(upload_id))
    _discard_upload(upload)


class _Body:
    """Iterate a request body in chunks: sniff the first bytes, hash for the chunk checksum, and stop quietly
    (remembering it) when the client goes away mid-body."""

    def __init__(self, stream, first: bool, algorithm: str | None, limit: int):
        self.stream, self.first, self.limit = stream, first, limit
        self.hasher = hashlib.new(algorithm) if algorithm else None
        self.received, self.cut = 0, False

    def __iter__(self) -> Iterator[bytes]:
        head = b""
        while True:
            try:
                chunk = self.stream.read(CHUNK)
            except ClientDisconnected:
                self.cut = True
                chunk = b""
            if self.first:
                head += chunk
                if len(head) < SNIFF_BYTES and chunk:
                    continue
                # A body shorter than the signatures is left to the full decode at the end.
                if len(head) >= SNIFF_BYTES and sniff(head) is None:
                    raise NotAnImage()
                chunk, self.first = head, False
            if not chunk:
                return
            if self.hasher:
                self.hasher.update(chunk)
            self.received += len(chunk)
            if self.received > self.limit:  # a body without Content-Length that goes on too long
                raise PayloadTooLarge(f"This chunk may have at most {self.limit} bytes.", limit_bytes=self.limit)
            yield chunk


def append_chunk(upload_id: uuid.UUID, uploader: str, offset: int, stream, content_length: int | None,
                 checksum: tuple[str, bytes] | None) -> tuple[int, str | None]:
    """Store a PATCH body at `offset`; return (new offset, sha256 of a blob completed by this chunk, if any).

    With a checksum the chunk is all or nothing; without one, the bytes that arrived before a cut are
    kept, so an upload resumes at any byte.

    :raises UploadOffsetMismatch: the offset is not the upload's (details.current_offset).
    :raises ChunkChecksumMismatch: the chunk does not match its checksum (discarded).
    :raises PayloadTooLarge: the chunk goes past Upload-Length or PHOTO_MAX_CHUNK_BYTES.
    """
    upload = upload_for(upload_id, uploader)
    if offset != upload.offset:
        raise UploadOffsetMismatch(current_offset=upload.offset)
    left = upload.length - upload.offset
    if content_length is not None and content_length > left:
        raise PayloadTooLarge(f"The upload has {left} bytes left.", limit_bytes=left)
    length = upload.length
    db.session.commit()  # release the connection while the bytes trickle in

    key = f"uploads/{upload_id}/{offset:012d}-{secrets.token_hex(4)}"
    limit = min(length - offset, current_app.config["PHOTO_MAX_CHUNK_BYTES"])
    body = _Body(stream, first=offset == 0, algorithm=checksum[0] if checksum else None, limit=limit)
    try:
        storage().put(key, body)
    except NotAnImage:
        storage().delete(key)
        _refuse(upload_id, "photo.not_an_image")
        raise
    if body.received == 0 or (checksum and body.cut):
        storage().delete(key)  # nothing usable arrived (a cut chunk with a checksum cannot be verified)
        return offset, None
    if checksum and body.hasher.digest() != checksum[1]:
        storage().delete(key)
        raise ChunkChecksumMismatch(offset=offset)
    new_offset = offset + body.received
    moved = db.session.execute(
        update(PhotoUpload).where(PhotoUpload.id == upload_id, PhotoUpload.offset == offset)
        .values(offset=new_offset, expires_at=_expiry(),
                parts=PhotoUpload.parts.op("||")(db.func.jsonb_build_array(
                    db.func.jsonb_build_array(offset, body.received, key))))
        .returning(PhotoUpload.offset)).scalar()
    db.session.commit()
    if moved is None:  # another PATCH for the same offset won the race: ours is surplus
        storage().delete(key)
        current = db.session.scalar(select(PhotoUpload.offset).where(PhotoUpload.id == upload_id))
        raise UploadOffsetMismatch(current_offset=current)
    if new_offset < length:
        return new_offset, None
    return new_offset, finish_upload(upload_id)


def _refuse(upload_id: uuid.UUID, code: str) -> None:
    """The bytes are not an acceptable photo: drop the upload and say so on every declaration of the hash."""
    db.session.rollback()
    upload = db.session.get(PhotoUpload, upload_id)
    if upload is None:
        return
    db.session.execute(update(IncidentPhoto).where(IncidentPhoto.sha256 == upload.sha256,
                                                   IncidentPhoto.blob_sha256.is_(None)).values(problem=code))
    _discard_upload(upload)
    db.session.commit()


def finish_upload(upload_id: uuid.UUID) -> str:
    """Verify a complete upload (SHA-256, then a full decode), store the blob and bind every declaration.

    :returns: the blob's sha256 (the caller enqueues the derive job after this commit).
    :raises PhotoHashMismatch: the bytes' hash is not the declared one (the upload restarts at 0).
    :raises NotAnImage, InvalidImage, TooManyPixels: the image checks failed (the upload is dropped).
    """
    upload = db.session.get(PhotoUpload, upload_id)
    sha256, parts = upload.sha256, list(upload.parts)
    db.session.commit()
    with tempfile.TemporaryFile() as copy:
        hasher = hashlib.sha256()
        for _, _, key in parts:
            for chunk in storage().open(key):
                hasher.update(chunk)
                copy.write(chunk)
        actual = hasher.hexdigest()
        if actual != sha256:
            db.session.execute(update(PhotoUpload).where(PhotoUpload.id == upload_id).values(offset=0, parts=[]))
            db.session.commit()
            for _, _, key in parts:
                storage().delete(key)
            raise PhotoHashMismatch(declared=sha256, actual=actual)
        copy.seek(0)
        try:
            mime, width, height = inspect_image(copy)
        except (NotAnImage, InvalidImage, TooManyPixels) as refusal:
            _refuse(upload_id, refusal.code)
            raise
        copy.seek(0)
        storage().put(blob_key(sha256), iter(lambda: copy.read(CHUNK), b""))
    _lock_hash(sha256)
    db.session.execute(insert(PhotoBlob).values(sha256=sha256, size=sum(p[1] for p in parts), mime=mime, width=width,
                                                height=height).on_conflict_do_nothing())
    db.session.execute(update(IncidentPhoto).where(IncidentPhoto.sha256 == sha256, IncidentPhoto.blob_sha256.is_(None))
                       .values(blob_sha256=sha256, bound_at=utcnow(), problem=None))
    db.session.execute(delete(PhotoUpload).where(PhotoUpload.id == upload_id))
    db.session.commit()
    for _, _, key in parts:
        storage().delete(key)
    return sha256


def inspect_image(fileobj) -> tuple[str, int, int]:
    """Decode an image fully, within the pixel limit; return (mime, width, height).

    :raises NotAnImage: not JPEG, PNG or WebP.
    :raises TooManyPixels: width × height above PHOTO_MAX_PIXELS (checked before decoding).
    :raises InvalidImage: truncated or corrupt.
    """
    limit = current_app.config["PHOTO_MAX_PIXELS"]
    mime = sniff(fileobj.read(SNIFF_BYTES))
    fileobj.seek(0)
    if mime is None:
        raise NotAnImage()
    try:
        image = Image.open(fileobj, formats=[PIL_FORMATS[mime]])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooManyPixels(limit_pixels=limit) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InvalidImage() from exc
    with image:
        width, height = image.size
        if width * height > limit:
            raise TooManyPixels(limit_pixels=limit, width=width, height=height)
        if image.format == "JPEG":
            image.draft("RGB", (max(1, width // 8), max(1, height // 8)))  # every scan is read, at 1/8 scale
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise InvalidImage() from exc
    return mime, width, height


# --- derived images -----------------------------------------------------------------------------------
def derive(sha256: str) -> str:
    """Make the display image and the thumbnail: EXIF orientation applied, no metadata at all. Idempotent."""
    blob = db.session.get(PhotoBlob, sha256)
    if blob is None:
        return "gone"
    if blob.derived_at is not None:
        return "done"
    sizes = {"display": current_app.config["PHOTO_DISPLAY_PX"], "thumbnail": current_app.config["PHOTO_THUMB_PX"]}
    db.session.commit()
    with tempfile.TemporaryFile() as copy:
        for chunk in storage().open(blob_key(sha256)):
            copy.write(chunk)
        copy.seek(0)
        with Image.open(copy, formats=list(PIL_FORMATS.values())) as image:
            if image.format == "JPEG":
                image.draft("RGB", (sizes["display"], sizes["display"]))
            upright = ImageOps.exif_transpose(image).convert("RGB")
        made = {}
        for variant, px in sizes.items():
            small = upright.copy()
            small.thumbnail((px, px))
            # A new image from the pixels alone: no EXIF (GPS), XMP, ICC or comment can ride along.
            clean = Image.frombytes("RGB", small.size, small.tobytes())
            with tempfile.TemporaryFile() as out:
                clean.save(out, "JPEG", quality=85, optimize=True)
                out.seek(0)
                made[variant] = storage().put(derived_key(sha256, variant), iter(lambda out=out: out.read(CHUNK), b""))
    db.session.execute(update(PhotoBlob).where(PhotoBlob.sha256 == sha256).values(
        derived_at=utcnow(), display_size=made["display"], thumbnail_size=made["thumbnail"]))
    db.session.commit()
    return "derived"


# --- downloads ----------------------------------------------------------------------------------------
def visible_blob(sha256: str, user: User, prefix: str) -> PhotoBlob:
    """Return a blob bound to an incident the user may see: staff by area, a grid worker by their pull
    scope (their cells and their own reports).

    :raises PhotoNotFound: no such blob, or none of its incidents is visible (never 403: no probing).
    """
    blob = db.session.get(PhotoBlob, sha256)
    if blob is None:
        raise PhotoNotFound(sha256=sha256)
    seen = (select(IncidentPhoto.incident_id).where(IncidentPhoto.blob_sha256 == sha256))
    query = (select(Incident.id).join(AdminArea, AdminArea.id == Incident.township_id)
             .where(Incident.id.in_(seen), AdminArea.code.startswith(prefix)))
    if user.role == "grid_worker":
        _, cells = current_scope(user)
        candidates = db.session.scalars(select(Incident).where(Incident.id.in_(seen))).all()
        if not any(i.reporter_id == user.id or incidents_.cell_code(i) in cells for i in candidates):
            raise PhotoNotFound(sha256=sha256)
    elif db.session.scalar(query.limit(1)) is None:
        raise PhotoNotFound(sha256=sha256)
    return blob


def rendition(blob: PhotoBlob, variant: str) -> tuple[str, int, str]:
    """Return (storage key, size, mime) of a rendition; derived ones only once the job has made them.

    :raises PhotoNotFound: not derived yet.
    """
    if variant == "original":
        return blob_key(blob.sha256), blob.size, blob.mime
    if blob.derived_at is None:
        raise PhotoNotFound("The derived images are not ready yet.", sha256=blob.sha256, variant=variant)
    size = blob.display_size if variant == "display" else blob.thumbnail_size
    return derived_key(blob.sha256, variant), size, "image/jpeg"


# --- collection ---------------------------------------------------------------------------------------
def collect_garbage() -> dict:
    """Delete expired uploads (with their parts) and orphan blobs past PHOTO_ORPHAN_DAYS. Safe to run twice."""
    now = utcnow()
    expired = db.session.scalars(select(PhotoUpload).where(PhotoUpload.expires_at < now)
                                 .with_for_update(skip_locked=True)).all()
    part_keys = [key for upload in expired for _, _, key in upload.parts]
    for upload in expired:
        db.session.delete(upload)
    db.session.commit()
    for key in part_keys:
        storage().delete(key)

    cutoff = now - timedelta(days=current_app.config["PHOTO_ORPHAN_DAYS"])
    declared = exists().where(IncidentPhoto.sha256 == PhotoBlob.sha256)
    candidates = db.session.scalars(select(PhotoBlob.sha256).where(PhotoBlob.created_at < cutoff, ~declared)).all()
    db.session.commit()
    orphans = 0
    for sha256 in candidates:
        _lock_hash(sha256)
        gone = db.session.execute(delete(PhotoBlob).where(PhotoBlob.sha256 == sha256, ~declared)).rowcount
        db.session.commit()
        if gone:
            orphans += 1
            for key in (blob_key(sha256), derived_key(sha256, "display"), derived_key(sha256, "thumbnail")):
                storage().delete(key)
    return {"expired_uploads": len(expired), "orphan_blobs": orphans}


def iter_range(key: str, start: int, end: int) -> Iterable[bytes]:
    """Stream [start, end) of a stored object."""
    return storage().open(key, start, end)
