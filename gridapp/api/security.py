"""Bearer-token authentication and the role check, applied to every API view with @require."""
from functools import wraps

from flask import g, request
from flask.ctx import _AppCtxGlobals

from gridapp.errors import AuthRequired, Forbidden
from gridapp.extensions import db
from gridapp.models import ApiToken, User
from gridapp.services.access import Principal, can
from gridapp.services.auth import principal_for_token


class RequestGlobals(_AppCtxGlobals):
    """Flask's `g`, where `g.user` (User) and `g.token` (ApiToken) load on first use from `g.principal`.

    authenticate() reads only the principal (ids, role, area code) with one small query; most views need
    nothing more (`scope_prefix(g.principal)`), so the ORM rows are fetched only by views that use them.
    """

    def __getattr__(self, name: str):
        principal = self.__dict__.get("principal")
        if principal is None or name not in ("user", "token"):
            return super().__getattr__(name)
        value = db.session.get(User, principal.user_id) if name == "user" else db.session.get(ApiToken, principal.token_id)
        if value is None:  # deleted since authenticate(): as if the token were unknown
            raise AuthRequired()
        setattr(self, name, value)
        return value


def authenticate() -> Principal:
    """Resolve the request's bearer token to its principal and store it on g (g.user, g.token follow)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        raise AuthRequired()
    g.principal = principal_for_token(token.strip())
    # An app context reused across requests (tests) must not keep the previous caller's rows.
    g.pop("user", None)
    g.pop("token", None)
    return g.principal


def require(permission: str):
    """Let the view run only for an authenticated user whose role holds `permission`.

    Put it under @blp.route and above @blp.arguments, so a missing token answers 401 before any
    argument is parsed.
    """

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            if not can(authenticate(), permission):
                raise Forbidden()
            return view(*args, **kwargs)

        wrapper.required_permission = permission
        return wrapper

    return decorator
