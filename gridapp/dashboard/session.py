"""Session sign-in for the dashboard and its CSRF token.

The session is Flask's signed cookie (HttpOnly, SameSite=Lax, Secure unless configured otherwise) holding
the user id and a random per-session CSRF token. Every POST must send the token back (hidden form field
`csrf_token` or header `X-CSRF-Token`); it is checked before anything else, including sign-in itself."""
import hmac
import secrets
from functools import wraps

from flask import g, redirect, request, session, url_for

from gridapp.errors import CsrfFailed, Forbidden
from gridapp.extensions import db
from gridapp.models import User
from gridapp.services.access import can

# Who may use the dashboard at all: the staff roles that read incidents (grid workers use their phones).
DASHBOARD_PERMISSION = "incident.read"


def csrf_token() -> str:
    """The session's CSRF token, created on first use."""
    if "csrf" not in session:
        session["csrf"] = secrets.token_urlsafe(32)
    return session["csrf"]


def check_csrf() -> None:
    """Refuse a state-changing request whose token is missing or not this session's.

    :raises CsrfFailed: no token, or another one.
    """
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    sent = request.form.get("csrf_token") or request.headers.get("X-CSRF-Token") or ""
    expected = session.get("csrf")
    if not expected or not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfFailed()


def sign_in(user: User) -> None:
    """Start a fresh session for the user (a new CSRF token too: no fixation of a pre-login session)."""
    session.clear()
    session.permanent = True
    session["user_id"] = user.id
    csrf_token()


def sign_out() -> None:
    session.clear()


def current_user() -> User | None:
    """The signed-in, still active user, or None."""
    user_id = session.get("user_id")
    user = db.session.get(User, user_id) if user_id else None
    return user if user is not None and user.is_active else None


def login_required(permission: str = DASHBOARD_PERMISSION):
    """Let the view run for a signed-in user whose role holds `permission` (same matrix as the API)."""

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            user = current_user()
            if user is None:
                session.pop("user_id", None)
                return redirect(url_for("dashboard.login", next=request.full_path if request.method == "GET" else None))
            if not can(user, DASHBOARD_PERMISSION) or not can(user, permission):
                raise Forbidden()
            g.user = user
            return view(*args, **kwargs)

        wrapper.required_permission = permission
        return wrapper

    return decorator
