import os
import subprocess
import sys
import time

from redis import Redis
from rq import Worker

from gridapp import create_app
from gridapp.extensions import db
from tests.conftest import TEST_CONFIG


def test_healthz_names_missing_workers_then_sees_a_live_worker(client):
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["down"] == ["rq_workers"]
    assert body["components"]["postgis"]["version"].startswith("3.")
    assert body["components"]["database"]["status"] == "up" and body["components"]["redis"]["status"] == "up"

    env = {**os.environ, "FLASK_APP": "wsgi.py", "GRIDAPP_SECRET_KEY": "test",
           "GRIDAPP_SQLALCHEMY_DATABASE_URI": TEST_CONFIG["SQLALCHEMY_DATABASE_URI"],
           "GRIDAPP_REDIS_URL": TEST_CONFIG["REDIS_URL"]}
    worker = subprocess.Popen([sys.executable, "-m", "flask", "worker", "--name", "health-test"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            response = client.get("/healthz")
            if response.status_code == 200:
                break
            time.sleep(0.2)
        assert response.status_code == 200, response.get_json()
        assert response.get_json()["components"]["rq_workers"]["names"] == ["health-test"]
        # RQ registers a worker before it installs its signal handlers (and starts its scheduler in between):
        # a SIGTERM before it is listening would kill it unregistered. Stop it once it waits for jobs.
        redis = Redis.from_url(TEST_CONFIG["REDIS_URL"])
        while time.monotonic() < deadline and Worker.find_by_key(
                Worker.redis_worker_namespace_prefix + "health-test", connection=redis).get_state() != "idle":
            time.sleep(0.1)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    # A politely stopped worker unregisters itself.
    assert client.get("/healthz").get_json()["down"] == ["rq_workers"]


def test_healthz_names_redis_and_database_when_down(app):
    down = create_app({**TEST_CONFIG, "REDIS_URL": "redis://127.0.0.1:1/0",
                       "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://gridapp:gridapp@127.0.0.1:1/x"})
    response = down.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["down"] == ["database", "postgis", "redis", "rq_workers"]
    with down.app_context():
        db.engine.dispose()
