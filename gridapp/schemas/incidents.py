from geoalchemy2.shape import to_shape
from marshmallow import Schema, fields, validate

from gridapp.models import INCIDENT_STATUSES, utcnow
from gridapp.schemas.photos import PhotoSchema, PhotoSpecSchema
from gridapp.services.masking import mask_id_number, mask_name, mask_phone


def _lonlat(incident):
    point = to_shape(incident.location)
    return [point.x, point.y]


def _seconds_left(incident):
    if incident.due_at is None or incident.status == "parked":
        return None
    return int((incident.due_at - utcnow()).total_seconds())


class NoteSchema(Schema):
    id = fields.UUID()
    text = fields.String()
    author = fields.Function(lambda note: note.author.username)
    created_at_device = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()


class RevisionSchema(Schema):
    version = fields.Integer()
    source = fields.String()
    actor_id = fields.Integer()
    mutation_id = fields.UUID(allow_none=True)
    changes = fields.Dict()
    created_at = fields.DateTime()


class IncidentSchema(Schema):
    id = fields.UUID()
    case_number = fields.String()
    version = fields.Integer()
    status = fields.String()
    category_code = fields.String(attribute="category_code_raw")
    category_name = fields.Function(lambda i: i.category.name if i.category else None)
    description = fields.String()
    location = fields.Function(_lonlat, metadata={"description": "[lon, lat] in WGS84"})
    raw_location = fields.Dict(metadata={"description": "the fix as the phone sent it"})
    gps_accuracy_m = fields.Float(allow_none=True)
    cell_code = fields.Function(lambda i: i.cell.code if i.cell else None)
    is_outside_grid = fields.Boolean(metadata={"description": "in no cell: placed by hand by the dispatcher"})
    reporter = fields.Function(lambda i: i.reporter.username)
    created_at_device = fields.DateTime(allow_none=True)
    clock_suspect = fields.Boolean()
    received_at = fields.DateTime()
    updated_at = fields.DateTime()
    squad_code = fields.Function(lambda i: i.squad.code if i.squad else None)
    due_at = fields.DateTime(allow_none=True)
    seconds_left = fields.Function(_seconds_left, metadata={"description": "until due_at; negative when overdue"})
    rework_count = fields.Integer()
    supervision_level = fields.Integer(allow_none=True)
    is_self_handled = fields.Boolean()
    is_ownerless = fields.Boolean(metadata={"description": "no rule of the responsibility list matched"})
    task_user = fields.Function(lambda i: i.task_user.username if i.task_user else None)
    master_id = fields.UUID(allow_none=True)
    likely_duplicate_of = fields.UUID(allow_none=True, metadata={"description": "an open case nearby, same category"})
    # The party (当事人): always masked in the API; unmasked only through an export with a reason.
    party_name = fields.Function(lambda i: mask_name(i.party_name), metadata={"description": "masked: 张*"})
    party_phone = fields.Function(lambda i: mask_phone(i.party_phone), metadata={"description": "masked: 138****5678"})
    party_id_number = fields.Function(lambda i: mask_id_number(i.party_id_number),
                                      metadata={"description": "masked: 330521********1234"})


class IncidentDetailSchema(IncidentSchema):
    notes = fields.List(fields.Nested(NoteSchema))
    # The view loads the history (schemas never query) and hands it over as `history`.
    revisions = fields.List(fields.Nested(RevisionSchema), attribute="history")
    allowed_actions = fields.List(fields.String(), metadata={"description": "what the caller may do now"})
    # The view lists them (services.photos.incident_photos) and hands them over as `photo_list`.
    photos = fields.List(fields.Nested(PhotoSchema), attribute="photo_list",
                         metadata={"description": "declared photos: present, missing or refused, with their URLs"})
    photos_missing = fields.Function(lambda i: sum(p["state"] == "missing" for p in i.photo_list),
                                     metadata={"description": "declared photos whose bytes have not arrived"})


class IncidentListArgs(Schema):
    outside_grid = fields.Boolean()
    status = fields.String(validate=validate.OneOf(INCIDENT_STATUSES))
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    before = fields.AwareDateTime(metadata={"description": "received before this time (paging, newest first)"})


class EventSchema(Schema):
    id = fields.Integer()
    action = fields.String()
    actor = fields.Function(lambda e: e.actor.username if e.actor else None)
    actor_role = fields.String()
    from_status = fields.String()
    to_status = fields.String()
    reason = fields.String(allow_none=True)
    details = fields.Dict()
    created_at = fields.DateTime()


class ActionSchema(Schema):
    reason = fields.String(load_default=None, validate=validate.Length(max=2000))
    params = fields.Dict(load_default=dict, metadata={"description": "squad_code, condition_seq, master_id, "
                                                                      "exists, amount, approve, level"})
    photos = fields.List(fields.Nested(PhotoSpecSchema), load_default=list, validate=validate.Length(max=50),
                         metadata={"description": "photos taken for this step, by hash (bytes via /api/v1/photos); "
                                                  "submit_result and self_handle need an after_handling one"})


class ActionResultSchema(Schema):
    event = fields.Nested(EventSchema)
    incident = fields.Nested(IncidentSchema)
    allowed_actions = fields.List(fields.String())
