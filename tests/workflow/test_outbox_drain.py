"""The outbox drain (one waiting job serves every young pending message) and webhook keep-alive connections."""
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from sqlalchemy import select

from gridapp.extensions import db, redis_store
from gridapp.jobs import dispatch, queue
from gridapp.jobs.dispatch import deliver_notification, drain_outbox, process_outbox_message, sweep
from gridapp.jobs.worker import run_worker
from gridapp.models import Category, Incident, Notification, OutboxMessage
from tests.workflow.helpers import act, add_rule, report


def auto_dispatch(world):
    add_rule(world, world["squad_a"], category=db.session.scalar(select(Category).where(Category.code == "06010")),
             area=world["township_a"], auto=True)


def test_one_waiting_drain_job_serves_every_report_and_a_rerun_changes_nothing(app, client, world, receiver):
    auto_dispatch(world)
    cases = [report(world, cell=i) for i in range(3)]
    for case in cases:
        assert act(client, world["users"]["dispatcher"], case, "register").status_code == 200
    assert queue().count == 1  # the first register enqueued the drain; the others found it waiting
    run_worker(app, ["default"], burst=True)
    db.session.expire_all()
    assert [db.session.get(Incident, c).status for c in cases] == ["dispatched"] * 3
    assert len(receiver.received) == 3
    routes = db.session.scalars(select(OutboxMessage.id).where(OutboxMessage.kind == "route")).all()
    assert [process_outbox_message(m) for m in routes] == ["skipped"] * 3  # the sweeper's job, after the drain
    assert drain_outbox() == "0 done, 0 failed"
    assert len(receiver.received) == 3 and len(set(receiver.keys())) == 3


def test_a_message_failing_in_the_drain_is_left_to_the_sweeper(app, client, world, receiver, monkeypatch):
    auto_dispatch(world)
    bad, good = report(world, cell=0), report(world, cell=1)
    for case in (bad, good):
        act(client, world["users"]["dispatcher"], case, "register")
    route = dispatch.HANDLERS["route"]

    def broken(message):
        if message.incident_id == bad:
            raise RuntimeError("a bug")
        return route(message)

    monkeypatch.setitem(dispatch.HANDLERS, "route", broken)
    assert drain_outbox() == "1 done, 1 failed"  # the good one is not held up by the bad one
    db.session.expire_all()
    assert db.session.get(Incident, good).status == "dispatched" and db.session.get(Incident, bad).status == "registered"
    monkeypatch.setitem(dispatch.HANDLERS, "route", route)
    monkeypatch.setitem(app.config, "OUTBOX_SWEEP_AFTER_SECONDS", 0)
    assert drain_outbox() == "0 done, 0 failed"  # old for a drain now: the sweeper's
    assert sweep()["outbox"] == 1
    run_worker(app, ["default"], burst=True)  # a job of its own for the failed message
    db.session.expire_all()
    assert db.session.get(Incident, bad).status == "dispatched"
    assert len(receiver.received) == 2 and len(set(receiver.keys())) == 2


class LingeringDrain:
    """drain_outbox run in a thread of its own (as in a worker), lingering for `linger` seconds."""

    def __init__(self, app, monkeypatch, linger: float):
        monkeypatch.setitem(app.config, "OUTBOX_DRAIN_LINGER_SECONDS", linger)
        self.result = None

        def run():
            with app.app_context():
                self.result = drain_outbox()

        self.thread = threading.Thread(target=run)
        self.thread.start()

    def join(self):
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        return self.result


def wait_until(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_lingering_drain_job_is_woken_by_the_next_report_instead_of_a_new_job(app, client, world, receiver,
                                                                                   monkeypatch):
    auto_dispatch(world)
    first, second = report(world, cell=0), report(world, cell=1)
    act(client, world["users"]["dispatcher"], first, "register")
    assert queue().count == 1
    queue().empty()  # the job is run by hand below, as the worker would
    drain = LingeringDrain(app, monkeypatch, linger=3.0)
    wait_until(lambda: len(receiver.received) == 1 and redis_store.connection.exists(dispatch.DRAIN_KEY))
    act(client, world["users"]["dispatcher"], second, "register")
    wait_until(lambda: len(receiver.received) == 2)
    assert queue().count == 0  # the request woke the lingering job: no new job
    assert drain.join() == "2 done, 0 failed"
    assert not redis_store.connection.exists(dispatch.DRAIN_KEY)  # released: the next report enqueues a job
    db.session.expire_all()
    assert [db.session.get(Incident, c).status for c in (first, second)] == ["dispatched"] * 2
    assert len(set(receiver.keys())) == 2


def test_a_lingering_drain_job_looks_once_more_after_releasing_the_key(app, client, world, receiver, monkeypatch):
    """A message whose request found the key taken but never woke the job (its token lost) is still run
    by that job before it ends."""
    auto_dispatch(world)
    case = report(world)
    drain = LingeringDrain(app, monkeypatch, linger=1.0)
    wait_until(lambda: redis_store.connection.exists(dispatch.DRAIN_KEY))  # lingering now
    monkeypatch.setattr(dispatch, "_request_drain", lambda: None)
    act(client, world["users"]["dispatcher"], case, "register")
    assert drain.join() == "1 done, 0 failed"
    assert len(receiver.received) == 1


def test_a_lingering_drain_job_leaves_the_waiting_to_a_job_that_took_the_key(app, world, monkeypatch):
    monkeypatch.setitem(app.config, "OUTBOX_DRAIN_LINGER_SECONDS", 30.0)
    drain_round = dispatch._drain_round

    def another_request_meanwhile(counts):
        redis_store.connection.set(dispatch.DRAIN_KEY, "another job")  # a request enqueued one while we ran
        return drain_round(counts)

    monkeypatch.setattr(dispatch, "_drain_round", another_request_meanwhile)
    assert drain_outbox() == "0 done, 0 failed"
    assert redis_store.connection.get(dispatch.DRAIN_KEY) == b"another job"  # neither taken nor released


class KeepAliveReceiver:
    """An HTTP/1.1 webhook receiver that records which client connection (port) each POST came on."""

    def __init__(self):
        self.ports, self.close_next = [], False
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.ports.append(self.client_address[1])
                self.send_response(204)
                self.send_header("Content-Length", "0")
                if receiver.close_next:
                    receiver.close_next = False
                    self.send_header("Connection", "close")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_deliveries_reuse_a_keep_alive_connection_and_survive_its_close(app, client, world):
    hook = KeepAliveReceiver()
    try:
        world["squad_a"].webhook_url = hook.url
        db.session.commit()
        cases = [report(world, cell=i) for i in range(4)]
        for case in cases:
            act(client, world["users"]["dispatcher"], case, "register")
            act(client, world["users"]["dispatcher"], case, "dispatch", squad_code="01")
        dispatch._WEBHOOKS.connections.clear()
        ids = []
        for message in db.session.scalars(select(OutboxMessage.id).where(OutboxMessage.kind == "notify")).all():
            process_outbox_message(message)  # writes the notification and delivers it
        ids = db.session.scalars(select(Notification.id).order_by(Notification.id)).all()
        assert len(ids) == 4 and len(hook.ports) == 4
        assert len(set(hook.ports[:2])) == 1  # one connection for consecutive deliveries
        hook.close_next = True
        db.session.execute(Notification.__table__.update().values(state="pending"))
        db.session.commit()
        assert deliver_notification(ids[0]) == "sent"  # the receiver closes this connection after answering
        assert deliver_notification(ids[1]) == "sent"  # a new one
        assert hook.ports[-1] != hook.ports[-2]
    finally:
        hook.close()
