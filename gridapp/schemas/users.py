from marshmallow import Schema, fields, validate

from gridapp.models import ROLES


class UserListArgs(Schema):
    role = fields.String(validate=validate.OneOf(list(ROLES)))
