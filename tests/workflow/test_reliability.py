"""Nothing lost, nothing twice: Redis stopped while cases are registered and dispatched, and the RQ
worker killed with SIGKILL in the middle of a delivery. A private, real redis-server for each test."""
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from redis import Redis
from sqlalchemy import select

from gridapp.extensions import db
from gridapp.jobs.dispatch import sweep
from gridapp.jobs.worker import run_worker
from gridapp.models import Incident, IncidentEvent, Notification, OutboxMessage
from tests.conftest import TEST_CONFIG
from tests.factories import token_for
from tests.workflow.helpers import report

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateRedis:
    """A redis-server of this test's own, which the test may stop and start again."""

    def __init__(self, tmp_path):
        self.port, self.dir, self.process = free_port(), tmp_path, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self):
        self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                         "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.process:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def redis_server(tmp_path):
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def app2(app, redis_server):
    """The test app pointed at the private Redis, with an eager sweeper (no waiting in tests)."""
    shared, sweep_after = app.extensions["redis"], app.config["OUTBOX_SWEEP_AFTER_SECONDS"]
    app.extensions["redis"] = Redis.from_url(redis_server.url, socket_timeout=5, socket_connect_timeout=2)
    app.config["OUTBOX_SWEEP_AFTER_SECONDS"] = 0
    yield app
    app.extensions["redis"].close()
    app.extensions["redis"], app.config["OUTBOX_SWEEP_AFTER_SECONDS"] = shared, sweep_after


def act(client, user, case, action, **params):
    return client.post(f"/api/v1/incidents/{case}/actions/{action}", headers=token_for(user),
                       json={"params": params})


def test_redis_down_during_register_and_dispatch(app2, world, receiver, redis_server):
    users, case = world["users"], report(world)
    client = app2.test_client()
    redis_server.stop()
    with app2.app_context():
        health = client.get("/healthz")
        assert health.status_code == 503 and "redis" in health.get_json()["down"]
        assert act(client, users["dispatcher"], case, "register").status_code == 200
        assert act(client, users["dispatcher"], case, "dispatch", squad_code="01").status_code == 200
        assert len(db.session.scalars(select(OutboxMessage).where(OutboxMessage.processed_at.is_(None))).all()) == 2
    redis_server.start()
    with app2.app_context():
        for _ in range(3):  # the sweeper and the worker, more than once: still one delivery
            sweep()
            run_worker(app2, ["default"], burst=True)
        db.session.expire_all()
        assert db.session.scalars(select(OutboxMessage).where(OutboxMessage.processed_at.is_(None))).all() == []
        assert [n.state for n in db.session.scalars(select(Notification))] == ["sent"]
        actions = [e.action for e in db.session.scalars(select(IncidentEvent).where(IncidentEvent.incident_id == case)
                                                        .order_by(IncidentEvent.id))]
    # Routing ran after the dispatcher had dispatched by hand, so it changed nothing and recorded nothing.
    assert actions == ["incident.register", "incident.dispatch"]
    assert len(receiver.received) == 1


def test_worker_killed_mid_delivery(app2, world, receiver, redis_server):
    users, case = world["users"], report(world)
    receiver.delay = 3.0  # the webhook is slow: the worker will be inside the POST when it dies
    env = {**os.environ, "FLASK_APP": "wsgi.py", "GRIDAPP_SECRET_KEY": "test",
           "GRIDAPP_SQLALCHEMY_DATABASE_URI": TEST_CONFIG["SQLALCHEMY_DATABASE_URI"],
           "GRIDAPP_REDIS_URL": redis_server.url}
    worker = subprocess.Popen([sys.executable, "-m", "flask", "worker"], cwd=ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = app2.test_client()
        with app2.app_context():
            act(client, users["dispatcher"], case, "register")
            act(client, users["dispatcher"], case, "dispatch", squad_code="01")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not receiver.in_flight:  # wait until the delivery is running
            time.sleep(0.1)
        assert receiver.in_flight, "the delivery never started"
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    receiver.delay = 0
    time.sleep(3.5)  # the first request completes on the receiver's side even though its sender died
    with app2.app_context():
        db.session.expire_all()
        assert db.session.scalar(select(Notification)).state == "pending"  # the death left no false "sent"
        sweep()
        run_worker(app2, ["default"], burst=True)
        db.session.expire_all()
        notification = db.session.scalar(select(Notification))
        assert notification.state == "sent"
        assert db.session.get(Incident, case).status == "dispatched"
    # At least once on the wire, exactly once by idempotency key: the receiver acts on one.
    assert set(receiver.keys()) == {notification.idempotency_key}
