"""psycopg cursors on the session's own connection (same transaction), for the streaming and report queries
that build their SQL from services/filters.py (psycopg `%(name)s` parameters)."""
from gridapp.extensions import db


def cursor(name: str | None = None):
    """A cursor; named = server-side, so rows arrive in batches of `itersize`."""
    connection = db.session.connection().connection.driver_connection
    return connection.cursor(name=name) if name else connection.cursor()
