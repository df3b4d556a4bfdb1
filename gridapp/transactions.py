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
from collections.abc import Callable
from typing import TypeVar

from flask import g, request
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from gridapp.extensions import db

log = logging.getLogger(__name__)
T = TypeVar("T")

READ_METHODS = ("GET", "HEAD")
# PostgreSQL's serialization failure and deadlock: the same work may succeed when tried again.
RETRYABLE_SQLSTATES = {"40001", "40P01"}
ATTEMPTS = 3


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


def _retryable(exc: OperationalError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in RETRYABLE_SQLSTATES


def commit_retrying(work: Callable[[], T]) -> T:
    """Run `work` and COMMIT; after a deadlock or serialization failure roll back and run it all again
    (ATTEMPTS in all). Anything else, and the last failure, is rolled back and raised."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            result = work()
            db.session.commit()
            return result
        except OperationalError as exc:
            db.session.rollback()
            if not _retryable(exc) or attempt == ATTEMPTS:
                raise
            log.info("%s on attempt %d, running it again", exc.orig.sqlstate, attempt)
    raise AssertionError("unreachable")


def commit_unless_raced(work: Callable[[], T]) -> T | None:
    """Run `work` and COMMIT; if it lost a race, roll back and return None.

    A race is a unique key another transaction committed first (IntegrityError), a deadlock or a
    serialization failure: the caller decides what to do next (look again, go one by one). Any other
    database failure is rolled back and raised.
    """
    try:
        result = work()
        db.session.commit()
        return result
    except IntegrityError:
        db.session.rollback()
        log.info("lost a race on a unique key: rolled back")
    except OperationalError as exc:
        db.session.rollback()
        if not _retryable(exc):
            raise
        log.info("%s: rolled back", exc.orig.sqlstate)
    return None
