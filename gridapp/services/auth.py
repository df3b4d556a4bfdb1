"""Sign-in and bearer tokens for API clients."""
import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import bindparam, select
from sqlalchemy.orm import joinedload

from gridapp.errors import AuthRequired, DeviceRevoked, InvalidCredentials
from gridapp.extensions import db
from gridapp.models import AdminArea, ApiToken, Device, User, utcnow
from gridapp.services.passwords import verify_password

TOKEN_PREFIX = "gat_"


def digest(token: str) -> str:
    """Return the SHA-256 (hex) under which a secret token is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_credentials(username: str, password: str) -> User:
    """Return the active user with these credentials.

    :raises InvalidCredentials: unknown user, wrong password or disabled user (one answer for all).
    """
    user = db.session.scalar(select(User).where(User.username == username))
    if not verify_password(user.password_hash if user else None, password) or not user.is_active:
        raise InvalidCredentials()
    return user


def new_token(user: User, ttl_seconds: int, device_id=None) -> tuple[str, ApiToken]:
    """Create a bearer token for a user (and device); return the token text (shown once) and its row."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user=user, token_hash=digest(token), device_id=device_id,
                   expires_at=utcnow() + timedelta(seconds=ttl_seconds))
    db.session.add(row)
    db.session.flush()
    return token, row


def issue_token(username: str, password: str, ttl_seconds: int) -> tuple[str, ApiToken]:
    """Check credentials and create a bearer token.

    :raises InvalidCredentials: see check_credentials.
    """
    return new_token(check_credentials(username, password), ttl_seconds)


# Built once: the statement and its cache key are the same on every authenticated request. The area's
# boundary (possibly a county outline of tens of thousands of vertices) is not needed to authorise.
_TOKEN_QUERY = (
    select(ApiToken)
    .options(joinedload(ApiToken.user).joinedload(User.area).defer(AdminArea.boundary))
    .where(ApiToken.token_hash == bindparam("token_hash"))
)


def user_for_token(token: str | None) -> tuple[User, ApiToken]:
    """Return the active user and token row for a bearer token.

    :raises AuthRequired: missing, unknown, expired or revoked token, or a disabled user.
    :raises DeviceRevoked: the token belongs to a revoked phone (it must wipe, not refresh).
    """
    if not token or not token.startswith(TOKEN_PREFIX):
        raise AuthRequired()
    row = db.session.execute(_TOKEN_QUERY, {"token_hash": digest(token)}).unique().scalar_one_or_none()
    if row is not None and row.device_id is not None and row.revoked_at is not None:
        device = db.session.get(Device, row.device_id)
        if device is not None and device.state == "revoked":
            raise DeviceRevoked(wipe=True)
    if row is None or row.revoked_at is not None or row.expires_at <= utcnow() or not row.user.is_active:
        raise AuthRequired()
    return row.user, row


def revoke_token(row: ApiToken) -> None:
    """Revoke a token (sign-out)."""
    row.revoked_at = utcnow()


def purge_expired_tokens() -> int:
    """Delete tokens that expired more than a day ago; return how many."""
    result = db.session.execute(
        ApiToken.__table__.delete().where(ApiToken.expires_at < utcnow() - timedelta(days=1))
    )
    return result.rowcount
