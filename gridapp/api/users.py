from flask import g
from flask_smorest import Blueprint

from gridapp.api.security import require
from gridapp.schemas.auth import UserSchema
from gridapp.schemas.users import UserListArgs
from gridapp.services.access import scope_prefix
from gridapp.services.users import users_in_scope

blp = Blueprint("users", __name__, url_prefix="/api/v1/users", description="User accounts")


@blp.route("")
@require("user.read")
@blp.arguments(UserListArgs, location="query")
@blp.response(200, UserSchema(many=True))
def list_users(args):
    """List the users in the caller's area (phone numbers masked)."""
    return users_in_scope(scope_prefix(g.principal), role=args.get("role"))
