"""Bearer-token authentication and the role check, applied to every API view with @require."""
from functools import wraps

from flask import g, request

from gridapp.errors import AuthRequired, Forbidden
from gridapp.services.access import can
from gridapp.services.auth import user_for_token


def authenticate():
    """Resolve the request's bearer token to a user; store user and token on g."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        raise AuthRequired()
    g.user, g.token = user_for_token(token.strip())
    return g.user


def require(permission: str):
    """Let the view run only for an authenticated user whose role holds `permission`.

    Put it under @blp.route and above @blp.arguments, so a missing token answers 401 before any
    argument is parsed.
    """

    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            user = authenticate()
            if not can(user, permission):
                raise Forbidden()
            return view(*args, **kwargs)

        wrapper.required_permission = permission
        return wrapper

    return decorator
