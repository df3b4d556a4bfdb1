"""Photo declarations (in sync mutations and workflow actions) and photo listings."""
from marshmallow import EXCLUDE, Schema, fields, pre_load, validate

from gridapp.models import PHOTO_TYPES

SHA256_HEX = validate.Regexp(r"^[0-9a-f]{64}$", error="64 lowercase hex digits (SHA-256).")


class PhotoSpecSchema(Schema):
    """A photo declared by hash; its bytes follow through the tus upload endpoints."""

    class Meta:
        unknown = EXCLUDE

    attachment_id = fields.UUID(required=True, metadata={"description": "minted by the phone; immutable"})
    sha256 = fields.String(required=True, validate=SHA256_HEX)
    size = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    type = fields.String(load_default="report", validate=validate.OneOf(PHOTO_TYPES))
    mime = fields.String(load_default=None, allow_none=True, validate=validate.Length(max=40),
                         metadata={"description": "as the phone believes; the server decides from the bytes"})

    @pre_load
    def lower_hash(self, data, **kwargs):
        if isinstance(data, dict) and isinstance(data.get("sha256"), str):
            data = {**data, "sha256": data["sha256"].lower()}
        return data


class PhotoUrlsSchema(Schema):
    original = fields.String(allow_none=True)
    display = fields.String(allow_none=True)
    thumbnail = fields.String(allow_none=True)


class PhotoSchema(Schema):
    """One photo of an incident, as services.photos.incident_photos lists it."""

    attachment_id = fields.UUID()
    type = fields.String(metadata={"description": "report, before_handling, after_handling or check"})
    sha256 = fields.String()
    size = fields.Integer()
    state = fields.String(metadata={"description": "present, missing (bytes not received yet) or refused"})
    problem = fields.String(allow_none=True, metadata={"description": "why the bytes were refused"})
    declared_by = fields.String()
    event_id = fields.Integer(allow_none=True)
    created_at = fields.DateTime()
    bound_at = fields.DateTime(allow_none=True)
    urls = fields.Nested(PhotoUrlsSchema)


class MissingPhotoSchema(Schema):
    attachment_id = fields.UUID(attribute="id")
    incident_id = fields.UUID()
    type = fields.String(attribute="photo_type")
    sha256 = fields.String()
    size = fields.Integer()
    mime = fields.String(allow_none=True)
    declared_at = fields.DateTime(attribute="created_at")


class RenditionArgs(Schema):
    variant = fields.String(required=True, validate=validate.OneOf(("original", "display", "thumbnail")))
