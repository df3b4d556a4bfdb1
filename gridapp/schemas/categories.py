from marshmallow import Schema, fields, validate

from gridapp.models import CATEGORY_KINDS, TIME_UNITS


class ConditionSchema(Schema):
    seq = fields.Integer()
    register_condition = fields.String(metadata={"description": "立案条件"})
    close_condition = fields.String(metadata={"description": "结案条件"})
    time_limit = fields.Integer(metadata={"description": "处置时限, in time_unit"})
    time_unit = fields.String(validate=validate.OneOf(list(TIME_UNITS)))
    time_unit_name = fields.Function(lambda c: TIME_UNITS[c.time_unit])


class CategorySchema(Schema):
    standard = fields.String()
    kind = fields.String(validate=validate.OneOf(list(CATEGORY_KINDS)))
    kind_name = fields.Function(lambda c: CATEGORY_KINDS[c.kind])
    code = fields.String()
    name = fields.String()
    major_code = fields.String()
    major_name = fields.String()
    is_local_extension = fields.Boolean()
    auto_register = fields.Boolean(metadata={"description": "自动立案: grid workers' reports are registered on arrival"})
    conditions = fields.List(fields.Nested(ConditionSchema))


class CategoryListArgs(Schema):
    standard = fields.String()
    kind = fields.String(validate=validate.OneOf(list(CATEGORY_KINDS)))
