from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from webargs.fields import DelimitedList

from gridapp.models import INCIDENT_STATUSES
from gridapp.schemas.grids import CELL_CODE


class IncidentFilterArgs(Schema):
    """The one incident filter (services/filters.py): exports, the OGC API, the evaluation, the dashboard."""

    start = fields.AwareDateTime(metadata={"description": "received at or after (ISO 8601 with offset)"})
    end = fields.AwareDateTime(metadata={"description": "received before"})
    area = fields.String(validate=validate.Regexp(r"^([0-9]{6}|[0-9]{9}|[0-9]{12})$",
                                                  error="An area code is 6, 9 or 12 digits."))
    cell = fields.String(validate=CELL_CODE)
    category = fields.String(validate=validate.Regexp(r"^[0-9]{2}([0-9]{3})?$",
                                                      error="A 5-digit category code or a 2-digit class."))
    status = DelimitedList(fields.String(validate=validate.OneOf(INCIDENT_STATUSES)),
                           metadata={"description": "comma-separated statuses"})
    squad = fields.Integer(metadata={"description": "squad id"})

    @validates_schema
    def check_range(self, data, **kwargs):
        if data.get("start") and data.get("end") and data["start"] >= data["end"]:
            raise ValidationError("start must be before end.", "end")
