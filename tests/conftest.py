"""Fixtures: one app on the test database (schema built by the migrations), a clean database and
Redis after every test, clients and a way to sign in as any role. Real PostgreSQL/PostGIS and Redis."""
import os
import tempfile
import threading

import pytest
from flask_migrate import upgrade
from sqlalchemy import text
from werkzeug.serving import make_server

from gridapp import create_app
from gridapp.extensions import db, redis_store

TEST_DB_URL = os.environ.get(
    "GRIDAPP_SQLALCHEMY_DATABASE_URI", "postgresql+psycopg://gridapp:gridapp@127.0.0.1:5432/gridapp_test"
)
TEST_REDIS_URL = os.environ.get("GRIDAPP_REDIS_URL", "redis://127.0.0.1:6379/15")
TEST_CONFIG = {
    "TESTING": True,
    "SECRET_KEY": "test-secret",
    "SQLALCHEMY_DATABASE_URI": TEST_DB_URL,
    "REDIS_URL": TEST_REDIS_URL,
    # Cheap hashing: the suite creates hundreds of users.
    "ARGON2_TIME_COST": 1,
    "ARGON2_MEMORY_KIB": 1024,
    # Photos go to a scratch directory of this test session (tests of the S3 backend set their own).
    "PHOTO_STORAGE_DIR": tempfile.mkdtemp(prefix="gridapp-test-photos-"),
    # Drain jobs end when they run out of messages (burst workers would wait out each linger); the tests of
    # lingering set it themselves.
    "OUTBOX_DRAIN_LINGER_SECONDS": 0,
}
# Tables that survive between tests: PostGIS's own, the migration marker and the sync counter (monotonic).
KEEP_TABLES = {"spatial_ref_sys", "alembic_version", "sync_counter"}


def _drop_everything():
    """Drop our tables (PostGIS stays), so migrations start from an empty schema."""
    names = db.session.execute(text(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'spatial_ref_sys'"
    )).scalars().all()
    if names:
        db.session.execute(text("DROP TABLE " + ", ".join(f'"{n}"' for n in names) + " CASCADE"))
    # Our functions (the sync_seq stamping), not PostGIS's: those belong to the extension.
    functions = db.session.execute(text("""
        SELECT p.oid::regprocedure::text FROM pg_proc p
        WHERE p.pronamespace = 'public'::regnamespace
          AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')""")).scalars().all()
    for function in functions:
        db.session.execute(text(f"DROP FUNCTION {function} CASCADE"))
    db.session.commit()


@pytest.fixture(scope="session")
def app():
    assert TEST_DB_URL.rsplit("/", 1)[-1].endswith("_test"), "tests only run against a *_test database"
    app = create_app(TEST_CONFIG)
    with app.app_context():
        _drop_everything()
        upgrade()
        yield app
        db.session.remove()
        db.engine.dispose()
        redis_store.connection.close()


@pytest.fixture(autouse=True)
def clean_state(request):
    """Empty every table and the test Redis database after each test."""
    yield
    if "app" not in request.fixturenames:
        return
    db.session.remove()
    tables = db.session.execute(text(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
    )).scalars().all()
    ours = [t for t in tables if t not in KEEP_TABLES]
    db.session.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in ours) + " RESTART IDENTITY CASCADE"))
    db.session.commit()
    redis_store.connection.flushdb()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


@pytest.fixture
def live_server(app):
    """The app in werkzeug's threaded HTTP server on 127.0.0.1; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
