"""Password hashing with argon2id."""
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app


def init_app(app):
    """Build the app's hasher; cost parameters are config so tests can use cheap ones."""
    app.extensions["password_hasher"] = PasswordHasher(
        time_cost=app.config.get("ARGON2_TIME_COST", 3),
        memory_cost=app.config.get("ARGON2_MEMORY_KIB", 65536),
    )


def _hasher() -> PasswordHasher:
    return current_app.extensions["password_hasher"]


def hash_password(password: str) -> str:
    """Return the argon2id hash of a password."""
    return _hasher().hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Check a password; with no hash, still spend the time so unknown usernames are not revealed."""
    hasher = _hasher()
    try:
        return hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def _dummy_hash() -> str:
    cached = current_app.extensions.get("password_dummy_hash")
    if cached is None:
        cached = current_app.extensions["password_dummy_hash"] = _hasher().hash("not-a-password")
    return cached
