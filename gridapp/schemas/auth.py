from marshmallow import Schema, fields, validate

from gridapp.models import ROLES
from gridapp.schemas.common import AreaRefSchema
from gridapp.services.masking import mask_phone


class TokenRequestSchema(Schema):
    username = fields.String(required=True, validate=validate.Length(min=1, max=80))
    password = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=1024))


class UserSchema(Schema):
    """A user as others see them; the phone number is masked (personal data)."""

    username = fields.String()
    display_name = fields.String()
    role = fields.String(validate=validate.OneOf(list(ROLES)))
    role_name = fields.Function(lambda user: ROLES[user.role])
    area = fields.Nested(AreaRefSchema)
    squad_code = fields.Function(lambda user: user.squad.code if user.squad else None)
    cell_codes = fields.Function(lambda user: sorted(c.code for c in user.cells if c.valid_to is None))
    phone_masked = fields.Function(lambda user: mask_phone(user.phone) or None)
    is_active = fields.Boolean()


class TokenSchema(Schema):
    access_token = fields.String()
    token_type = fields.String()
    expires_at = fields.DateTime()
    user = fields.Nested(UserSchema)

