"""Sign-in and bearer tokens for API clients."""
import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import bindparam, select

from gridapp.errors import AuthRequired, DeviceRevoked, InvalidCredentials
from gridapp.extensions import db
from gridapp.models import AdminArea, ApiToken, Device, User, utcnow
from gridapp.services.access import Principal
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


# Built once, on the tables (Core, no ORM objects): one row holds all that authentication and authorization
# need. psycopg prepares it after a few uses on a connection, and keeps it while requests end with COMMIT.
_tokens, _users, _areas, _devices = (model.__table__ for model in (ApiToken, User, AdminArea, Device))
_PRINCIPAL_QUERY = (
    select(_tokens.c.id, _tokens.c.user_id, _tokens.c.device_id, _tokens.c.expires_at, _tokens.c.revoked_at,
           _users.c.role, _users.c.is_active, _users.c.area_id, _areas.c.code.label("area_code"),
           _devices.c.state.label("device_state"), _devices.c.last_seen_at.label("device_seen_at"),
           _devices.c.clock_offset_ms.label("device_clock_offset_ms"))
    .select_from(_tokens.join(_users, _users.c.id == _tokens.c.user_id)
                 .join(_areas, _areas.c.id == _users.c.area_id)
                 .outerjoin(_devices, _devices.c.id == _tokens.c.device_id))
    .where(_tokens.c.token_hash == bindparam("token_hash"))
)


def principal_for_token(token: str | None) -> Principal:
    """Return who holds a bearer token: user id, role and area code, read fresh on every call (no cache,
    so a revoked token, a disabled user or a revoked phone is refused at once).

    :raises AuthRequired: missing, unknown, expired or revoked token, or a disabled user.
    :raises DeviceRevoked: the token belongs to a revoked phone (it must wipe, not refresh).
    """
    if not token or not token.startswith(TOKEN_PREFIX):
        raise AuthRequired()
    row = db.session.connection().execute(_PRINCIPAL_QUERY, {"token_hash": digest(token)}).first()
    if row is not None and row.device_id is not None and row.revoked_at is not None and row.device_state == "revoked":
        raise DeviceRevoked(wipe=True)
    if row is None or row.revoked_at is not None or row.expires_at <= utcnow() or not row.is_active:
        raise AuthRequired()
    return Principal(user_id=row.user_id, token_id=row.id, role=row.role, area_code=row.area_code,
                     area_id=row.area_id, device_id=row.device_id, device_state=row.device_state,
                     device_seen_at=row.device_seen_at, device_clock_offset_ms=row.device_clock_offset_ms)


def revoke_token(row: ApiToken) -> None:
    """Revoke a token (sign-out)."""
    row.revoked_at = utcnow()


def purge_expired_tokens() -> int:
    """Delete tokens that expired more than a day ago; return how many."""
    result = db.session.execute(
        ApiToken.__table__.delete().where(ApiToken.expires_at < utcnow() - timedelta(days=1))
    )
    return result.rowcount
