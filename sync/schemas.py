"""marshmallow schemas for the sync wire format (version 1)."""
import re

from marshmallow import EXCLUDE, Schema, ValidationError, fields, post_load, pre_load, validate

from geo.crs import POINT_CRS
from gridapp.schemas.photos import PhotoSpecSchema
from sync.protocol import PROTOCOL_VERSION

MAX_DESCRIPTION = 2000
MAX_NOTE = 2000
# NUL and other control characters (tab and newline stay): they break exports and terminals.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class CleanText(fields.String):
    """A string with control characters and lone surrogates removed."""

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        text = text.encode("utf-8", "replace").decode("utf-8")  # lone surrogates become '?'
        return _CONTROL.sub("", text).strip()


class LocationSchema(Schema):
    lon = fields.Float(required=True, allow_nan=False, validate=validate.Range(-180, 180))
    lat = fields.Float(required=True, allow_nan=False, validate=validate.Range(-90, 90))
    crs = fields.String(load_default="wgs84", validate=validate.OneOf(POINT_CRS))


class PartySchema(Schema):
    """The party or complainant (当事人), all optional: personal data, masked everywhere it is shown."""

    class Meta:
        unknown = EXCLUDE

    name = CleanText(load_default=None, allow_none=True, validate=validate.Length(max=100))
    phone = fields.String(load_default=None, allow_none=True,
                          validate=validate.Regexp(r"^\+?[0-9][0-9 -]{4,24}$", error="A phone number."))
    id_number = fields.String(load_default=None, allow_none=True,
                              validate=validate.Regexp(r"^([0-9]{17}[0-9Xx]|[0-9]{15})$",
                                                       error="A resident ID number: 18 (or old 15) digits."))

    @post_load
    def normalise(self, data, **kwargs):
        if data.get("phone"):
            data["phone"] = re.sub(r"[ -]", "", data["phone"])[:20]
        if data.get("id_number"):
            data["id_number"] = data["id_number"].upper()
        return {k: (v or None) for k, v in data.items()}


class IncidentDataSchema(Schema):
    """What a worker reports; anything else the phone sends (a cell, a status) is ignored."""

    class Meta:
        unknown = EXCLUDE

    category = fields.String(required=True, validate=validate.Length(min=1, max=40))
    description = CleanText(load_default="", validate=validate.Length(max=MAX_DESCRIPTION))
    location = fields.Nested(LocationSchema, required=True)
    gps_accuracy_m = fields.Float(load_default=None, allow_none=True, allow_nan=False, validate=validate.Range(min=0))
    party = fields.Nested(PartySchema, load_default=None, allow_none=True)


class MutationSchema(Schema):
    """The envelope shared by every mutation type."""

    class Meta:
        unknown = EXCLUDE

    mutation_id = fields.UUID(required=True)
    device_seq = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    type = fields.String(required=True)
    incident_id = fields.UUID(required=True)
    scope_epoch = fields.Integer(load_default=None, allow_none=True)
    created_at_device = fields.AwareDateTime(load_default=None, allow_none=True, default_timezone=None)


MAX_PHOTOS = 50  # per mutation


class CreateSchema(MutationSchema):
    data = fields.Nested(IncidentDataSchema, required=True)
    # Photos are declared here by hash; their bytes follow through the tus endpoints (docs/photos.md).
    photos = fields.List(fields.Nested(PhotoSpecSchema), load_default=list, validate=validate.Length(max=MAX_PHOTOS))


class FieldChangeSchema(Schema):
    from_ = fields.Raw(data_key="from", required=True, allow_none=True)
    to = fields.Raw(required=True, allow_none=True)


class UpdateSchema(MutationSchema):
    base_version = fields.Integer(required=True, validate=validate.Range(min=1))
    changes = fields.Dict(keys=fields.String(), values=fields.Nested(FieldChangeSchema), required=True,
                          validate=validate.Length(min=1))


class NoteSchema(MutationSchema):
    note_id = fields.UUID(required=True)
    text = CleanText(required=True, validate=validate.Length(min=1, max=MAX_NOTE))


class PhotoAddSchema(MutationSchema):
    photos = fields.List(fields.Nested(PhotoSpecSchema), required=True,
                         validate=validate.Length(min=1, max=MAX_PHOTOS))


MUTATION_SCHEMAS = {"incident.create": CreateSchema(), "incident.update": UpdateSchema(), "note.add": NoteSchema(),
                    "photo.add": PhotoAddSchema()}


class PushBatchSchema(Schema):
    protocol_version = fields.Integer(required=True, metadata={"description": f"this server speaks {PROTOCOL_VERSION}"})
    app_version = fields.String(load_default="")
    mutations = fields.List(fields.Raw(), required=True)

    @pre_load
    def require_object(self, data, **kwargs):
        if not isinstance(data, dict):
            raise ValidationError("The body must be a JSON object.")
        return data


class RegisterSchema(Schema):
    username = fields.String(required=True)
    password = fields.String(required=True, load_only=True)
    install_id = fields.String(required=True, validate=validate.Length(min=8, max=64))
    platform = fields.String(load_default="", validate=validate.Length(max=40))
    app_version = fields.String(load_default="", validate=validate.Length(max=40))


class RefreshSchema(Schema):
    refresh_token = fields.String(required=True)


class PullArgsSchema(Schema):
    cursor = fields.String(load_default=None, metadata={"description": "next_cursor of the previous page; none at first"})
    limit = fields.Integer(load_default=None, validate=validate.Range(min=1))


class VerifySchema(Schema):
    cursor = fields.String(required=True)
    buckets = fields.Dict(keys=fields.String(), values=fields.String(validate=validate.Regexp(r"^[0-9a-f]{64}$")),
                          required=True, metadata={"description": "bucket (cell code or 'own') → digest"})


class PushResultSchema(Schema):
    results = fields.List(fields.Dict())
    server_time = fields.DateTime()
    clock_offset_ms = fields.Integer(allow_none=True)
    clock_suspect = fields.Boolean()


class PullPageSchema(Schema):
    changes = fields.List(fields.Dict())
    next_cursor = fields.String()
    has_more = fields.Boolean()
    high_water_seq = fields.Integer()
    rescope = fields.Dict(allow_none=True)
    scope = fields.Dict()
    server_time = fields.DateTime()


class DeviceTokensSchema(Schema):
    device_id = fields.UUID()
    access_token = fields.String()
    refresh_token = fields.String()
    access_expires_in = fields.Integer()
    scope = fields.Dict()


class DeviceStateSchema(Schema):
    state = fields.String(required=True, validate=validate.OneOf(["active", "draining", "revoked"]))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))


class DeviceInfoSchema(Schema):
    device_id = fields.UUID(attribute="id")
    username = fields.Function(lambda d: d.user.username)
    state = fields.String()
    state_reason = fields.String(allow_none=True)
    platform = fields.String()
    app_version = fields.String()
    last_ack_seq = fields.Integer(metadata={"description": "the phone has everything up to this sync_seq"})
    clock_offset_ms = fields.Integer(allow_none=True)
    last_seen_at = fields.DateTime(allow_none=True)


# --- review, for the dispatch centre ---------------------------------------------------------------
class ReviewListArgs(Schema):
    state = fields.String(load_default="open")


class QuarantineSchema(Schema):
    id = fields.Integer()
    mutation_id = fields.UUID(allow_none=True)
    incident_id = fields.UUID(allow_none=True)
    device_id = fields.UUID()
    reporter = fields.Function(lambda item: item.user.username)
    code = fields.String()
    detail = fields.String()
    payload = fields.Dict()
    state = fields.String()
    resolution_reason = fields.String(allow_none=True)
    created_at = fields.DateTime()


class QuarantineResolveSchema(Schema):
    action = fields.String(required=True, validate=validate.OneOf(["apply", "edit_and_apply", "discard"]))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))
    payload = fields.Dict(load_default=None, metadata={"description": "the edited mutation (edit_and_apply)"})


class ConflictSchema(Schema):
    id = fields.Integer()
    incident_id = fields.UUID()
    field = fields.String()
    base_value = fields.Raw()
    server_value = fields.Raw()
    client_value = fields.Raw()
    resolution = fields.String()
    state = fields.String()
    created_at = fields.DateTime()


class ConflictResolveSchema(Schema):
    action = fields.String(required=True, validate=validate.OneOf(["accept", "restore_server"]))
    reason = fields.String(required=True, validate=validate.Length(min=1, max=500))
