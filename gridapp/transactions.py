"""How a request's database transaction ends: COMMIT for a read request that changed nothing, else ROLLBACK.

Flask-SQLAlchemy ends every request with `session.remove()`, which rolls back. psycopg forgets all its
prepared statements at every ROLLBACK (psycopg `_rollback_gen` clears its prepared cache), so each request
parsed and planned its queries again; a COMMIT keeps them. A GET or HEAD that raised nothing and leaves
no pending ORM change ends with COMMIT. GET views do not write, except those that commit their writes
themselves (GET /api/v1/sync/changes); bench/RESULTS.md ("Grid queries") records how that was checked.
Everything else is left to the rollback as before: other methods, and requests that raised (the error
handlers in errors.py roll back before answering, so a handled error commits nothing either).
"""
import logging

from flask import g, request
from sqlalchemy.exc import DBAPIError

from gridapp.extensions import db

log = logging.getLogger(__name__)

READ_METHODS = ("GET", "HEAD")


def init_app(app) -> None:
    """Register the hooks; call after db.init_app so the commit runs before the session is removed."""

    @app.teardown_request
    def note_read_request(exc):
        # The request is gone when the app context ends; remember whether it may end with COMMIT.
        g.read_request_succeeded = exc is None and request.method in READ_METHODS

    @app.teardown_appcontext
    def end_read_request(exc):
        if exc is None and g.pop("read_request_succeeded", False):
            commit_if_unchanged()


def commit_if_unchanged() -> bool:
    """COMMIT the session's transaction unless it holds ORM changes not yet flushed; return whether it did."""
    session = db.session()  # the request's Session (scoped_session proxies only part of its API)
    if not session.in_transaction() or session.new or session.dirty or session.deleted:
        return False
    try:
        session.commit()
        return True
    except DBAPIError:  # a dead connection: the rollback at session.remove() discards it
        log.warning("commit at the end of a read request failed", exc_info=True)
        return False
