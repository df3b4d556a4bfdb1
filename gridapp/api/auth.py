from datetime import UTC

from flask import current_app, g
from flask_smorest import Blueprint

from gridapp.api.security import require
from gridapp.errors import PROBLEM_MIME
from gridapp.extensions import db
from gridapp.schemas.auth import TokenRequestSchema, TokenSchema, UserSchema
from gridapp.schemas.common import ProblemSchema
from gridapp.services.auth import issue_token, revoke_token

blp = Blueprint("auth", __name__, url_prefix="/api/v1", description="Sign-in for API clients")


@blp.route("/auth/token", methods=["POST"])
@blp.doc(security=[])
@blp.arguments(TokenRequestSchema)
@blp.response(201, TokenSchema)
@blp.alt_response(401, schema=ProblemSchema, content_type=PROBLEM_MIME, description="auth.invalid_credentials")
def create_token(body):
    """Exchange a username and password for a bearer token."""
    token, row = issue_token(body["username"], body["password"], current_app.config["TOKEN_TTL_SECONDS"])
    db.session.commit()
    return {"access_token": token, "token_type": "Bearer", "expires_at": row.expires_at.astimezone(UTC),
            "user": row.user}


@blp.route("/auth/token", methods=["DELETE"])
@require("area.read")
@blp.response(204)
def delete_token():
    """Revoke the bearer token used for this request (sign out)."""
    revoke_token(g.token)
    db.session.commit()


@blp.route("/me")
@require("area.read")
@blp.response(200, UserSchema)
def me():
    """Return the signed-in user, their role, area and cells."""
    return g.user
