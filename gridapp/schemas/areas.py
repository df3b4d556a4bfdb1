from marshmallow import Schema, fields, validate

from gridapp.models import AREA_LEVELS


class AreaSchema(Schema):
    code = fields.String()
    name = fields.String()
    level = fields.String()
    code_system = fields.String()
    parent_code = fields.Function(lambda area: area.parent.code if area.parent else None)


class AreaListArgs(Schema):
    level = fields.String(validate=validate.OneOf(AREA_LEVELS))
    parent = fields.String(validate=validate.Regexp(r"^[0-9]{6}([0-9]{3}){0,2}$"))
