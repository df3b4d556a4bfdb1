from marshmallow import Schema, fields

from gridapp.schemas.common import AreaRefSchema


class SquadSchema(Schema):
    code = fields.String()
    name = fields.String()
    areas = fields.List(fields.Nested(AreaRefSchema))


class TeamSchema(Schema):
    name = fields.String()
    township = fields.Nested(AreaRefSchema)
    squads = fields.List(fields.Nested(SquadSchema))
