"""Network and concurrency faults against a real HTTP server (SYNC.md §6 cases 1-3, 20-23).

The app runs in werkzeug's threaded server on a loopback port; phones use the reference client's
HttpTransport, directly or through `FaultProxy`, a small TCP proxy that can lose a response or cut
a request. Concurrency comes from real threads, each with its own connection and app context.
"""
import http.client
import json
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select, text

from gridapp.extensions import db
from gridapp.models import (
    Device,
    Incident,
    IncidentNote,
    IncidentRevision,
    QuarantineItem,
    SyncDeferral,
    SyncReceipt,
    User,
)
from gridapp.services import incidents
from gridapp.services.areas import ensure_area
from sync import protocol as p
from sync import push as push_module
from sync.client import HttpTransport, PhoneClient, SyncError
from sync.pull import server_buckets
from tests.factories import CELL, ORIGIN_A, PASSWORD, make_user, make_world
from tests.sync.phones import assert_exactly_once, push_outbox_at_once

WEST, NORTH = ORIGIN_A
NETWORK_ERRORS = (OSError, http.client.HTTPException)
CHANGES = "/api/v1/sync/changes"
MUTATIONS = "/api/v1/sync/mutations"


def point_in(index: int) -> tuple[float, float]:
    """A point inside township A's cell number `index` (cells run west to east, then north to south)."""
    col, row = index % 3, index // 3
    return WEST + CELL * (col + 0.5), NORTH - CELL * (row + 0.5)


def count(model, *where) -> int:
    db.session.rollback()  # a fresh READ COMMITTED view of what the server threads committed
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def stored_counts() -> dict:
    """Row counts of everything a push may write."""
    return {model.__name__: count(model) for model in
            (Incident, IncidentNote, IncidentRevision, SyncReceipt, QuarantineItem, SyncDeferral)}


def cursor_seq(app, cursor: str | None) -> int:
    return p.decode_cursor(cursor, app.config["SECRET_KEY"].encode())["s"] if cursor else 0


# --- the server, the proxy, the phones ---------------------------------------------------------------
@pytest.fixture
def world(app):
    world = make_world(cols=3, rows=2)
    world["worker"] = make_user("worker", "grid_worker", world["township_a"], cells=world["cells_a"][:3])
    world["other_worker"] = make_user("other", "grid_worker", world["township_a"], cells=world["cells_a"][3:])
    world["dispatcher"] = make_user("dispatcher", "dispatcher", world["township_a"])
    db.session.commit()
    return world


class FaultProxy:
    """A loopback TCP proxy that forwards bytes both ways, or injects one armed (one-shot) fault:

    - "lose_response": forward the request; when the server's answer starts to arrive (so the server
      has committed), close both sides without forwarding a byte of it;
    - "cut_request": forward the request's headers and half of its body, then close both sides.
    """

    def __init__(self, upstream_url: str):
        host, port = upstream_url.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.fired: list[str] = []
        self._armed: str | None = None
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._start(self._accept)

    def arm(self, fault: str) -> None:
        with self._lock:
            self._armed = fault

    def _take(self, fault: str) -> bool:
        with self._lock:
            if self._armed != fault:
                return False
            self._armed = None
            self.fired.append(fault)
            return True

    def _start(self, target, *args) -> None:
        def run():
            try:
                target(*args)
            except OSError:  # a side closed: that connection is over
                pass

        thread = threading.Thread(target=run, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while True:
            downstream, _ = self.listener.accept()  # OSError once closed: the thread ends
            upstream = socket.create_connection(self.upstream)
            with self._lock:
                self._sockets += [downstream, upstream]
            self._start(self._requests, downstream, upstream)
            self._start(self._responses, upstream, downstream)

    def _requests(self, downstream: socket.socket, upstream: socket.socket) -> None:
        pending = b""
        while chunk := downstream.recv(65536):
            if not pending and self._armed != "cut_request":
                upstream.sendall(chunk)
                continue
            pending += chunk
            head, separator, body = pending.partition(b"\r\n\r\n")
            if not separator:
                continue
            length = _content_length(head)
            if length and len(body) * 2 < length:
                continue  # wait for at least half of the body
            if length and self._take("cut_request"):
                upstream.sendall(head + separator + body[: length // 2])
                break
            upstream.sendall(pending)
            pending = b""
        _close(downstream, upstream)

    def _responses(self, upstream: socket.socket, downstream: socket.socket) -> None:
        while chunk := upstream.recv(65536):
            if self._take("lose_response"):
                break
            downstream.sendall(chunk)
        _close(upstream, downstream)

    def close(self) -> None:
        _close(self.listener)
        with self._lock:
            _close(*self._sockets)
        for thread in self._threads:
            thread.join(timeout=5)


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv/accept on it
        except OSError:
            pass
        sock.close()


@pytest.fixture
def proxy(live_server):
    proxy = FaultProxy(live_server)
    yield proxy
    proxy.close()


def close_transport(transport) -> None:
    transport = getattr(transport, "inner", transport)  # unwrap a RecordingTransport
    if transport.connection is not None:
        transport.connection.close()
        transport.connection = None


@pytest.fixture
def http_phone(tmp_path, live_server):
    """Make phones that talk HTTP to the live server (or to a given URL, e.g. the proxy's)."""
    made: list[PhoneClient] = []

    def make(user, name="phone", base_url=None) -> PhoneClient:
        client = PhoneClient(HttpTransport(base_url or live_server, timeout=60), str(tmp_path / f"{name}.sqlite"))
        made.append(client)
        client.register(user.username, PASSWORD)
        return client

    yield make
    for client in made:
        close_transport(client.transport)
        client.db.close()


def device_row(client: PhoneClient) -> tuple:
    db.session.rollback()
    device = db.session.get(Device, uuid.UUID(client.device_id))
    return device.state, device.last_ack_seq, device.clock_offset_ms, device.last_seen_at


class RecordingTransport:
    """Wraps a transport and keeps every pull page it returns."""

    def __init__(self, inner):
        self.inner, self.pages = inner, []

    @property
    def connection(self):
        return self.inner.connection

    def __call__(self, method, path, headers, body):
        response = self.inner(method, path, headers, body)
        if path.startswith(CHANGES) and response.status == 200:
            self.pages.append(response.body)
        return response


# --- faults on one link -------------------------------------------------------------------------------
def test_lost_push_response_after_commit_is_duplicate_on_retry(world, http_phone, proxy):
    """§6 case 1: the link drops after the server committed an incident.create, before the phone got the answer."""
    client = http_phone(world["worker"], base_url=proxy.url)
    incident_id = client.report("06010", "the answer to this is lost", *point_in(0))
    proxy.arm("lose_response")
    with pytest.raises(NETWORK_ERRORS):
        client.push()
    assert proxy.fired == ["lose_response"]
    assert [m["incident_id"] for m in client.outbox()] == [incident_id], "the outbox keeps the item"
    assert client.results() == {}
    assert count(Incident) == 1 and count(SyncReceipt) == 1, "the server had committed"
    stored = db.session.get(Incident, uuid.UUID(incident_id))

    assert client.push() == {"duplicate": 1}
    result = next(iter(client.results().values()))
    assert result["original_status"] == "applied"
    assert (result["incident_id"], result["case_number"], result["version"], result["applied_seq"]) == (
        incident_id, stored.case_number, 1, stored.sync_seq)
    assert count(Incident) == 1 and count(IncidentRevision) == 1
    assert_exactly_once(client)


def test_lost_pull_response_is_re_pulled_idempotently(world, http_phone, proxy):
    """§6 case 23: a pull page whose answer is lost is sent again from the old cursor and applied once."""
    reporter = http_phone(world["other_worker"], name="reporter")
    client = http_phone(world["worker"], base_url=proxy.url)
    reporter.report("06010", "before", *point_in(0))
    reporter.push()
    client.pull()
    cursor = client._meta("cursor")
    ids = {reporter.report("06010", f"after {i}", *point_in(i)) for i in range(3)}
    reporter.push()

    proxy.arm("lose_response")
    with pytest.raises(NETWORK_ERRORS):
        client.pull()
    assert client._meta("cursor") == cursor, "the cursor is only saved with its page"
    assert not ids & set(client.incidents())
    client.pull()
    db.session.rollback()
    local = {i: r["version"] for i, r in client.incidents().items()}
    assert local == {i: v for pairs in server_buckets(world["worker"]).values() for i, v in pairs}
    assert ids <= set(local) and len(local) == 4
    assert client.verify(repair=False)["status"] in ("ok", "stale")  # stale only if another run committed since


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_request_cut_mid_body_applies_and_stores_nothing(world, http_phone, proxy, compress):
    """A link cut halfway through a push body: nothing is applied or stored, and the retry applies each item once."""
    client = http_phone(world["worker"], base_url=proxy.url)
    for i in range(3):
        client.report("06010", f"report {i} " + "现场情况描述" * 40, *point_in(i))
    before, device_before = stored_counts(), device_row(client)
    proxy.arm("cut_request")
    with pytest.raises(NETWORK_ERRORS):
        client.push(compress=compress)
    assert proxy.fired == ["cut_request"]
    time.sleep(0.2)  # let the server finish with the half request it got
    assert stored_counts() == before
    assert device_row(client) == device_before, "not even the clock estimate was recorded"
    assert len(client.outbox()) == 3 and client.results() == {}

    assert client.push(compress=compress) == {"applied": 3}
    assert count(Incident) == 3
    assert_exactly_once(client)


# --- concurrency -------------------------------------------------------------------------------------
PARALLEL_ROUNDS = 30


def test_parallel_duplicate_batches_apply_each_mutation_once(world, http_phone, live_server):
    """§6 case 3: the same batch on two connections at once, round after round: one `applied` and one
    `duplicate` per item, never a second row."""
    client = http_phone(world["worker"])
    headers = {"Authorization": f"Bearer {client._meta('access_token')}", "Content-Type": "application/json"}
    links = [HttpTransport(live_server), HttpTransport(live_server)]
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            for round_ in range(PARALLEL_ROUNDS):
                incident_id = client.report("06010", f"round {round_}", *point_in(round_ % 3))
                client.db.execute("INSERT INTO incidents VALUES (?, 1, ?)",
                                  (incident_id, json.dumps({"description": f"round {round_}"})))
                client.edit(incident_id, description=f"round {round_}, edited")
                client.add_note(incident_id, f"note {round_}")
                answers = push_outbox_at_once(client, links, headers, pool)
                assert [a.status for a in answers] == [200, 200], [a.body for a in answers]
                for k in range(3):
                    statuses = sorted(a.body["results"][k]["status"] for a in answers)
                    assert statuses == ["applied", "duplicate"], (round_, k, [a.body["results"][k] for a in answers])
    finally:
        for link in links:
            close_transport(link)
    assert count(Incident) == PARALLEL_ROUNDS
    assert count(IncidentNote) == PARALLEL_ROUNDS
    assert count(IncidentRevision) == 2 * PARALLEL_ROUNDS  # the create and the edit, once each
    assert count(SyncReceipt) == 3 * PARALLEL_ROUNDS
    assert count(QuarantineItem) == 0
    db.session.rollback()
    assert set(db.session.scalars(select(Incident.version))) == {2}


class TwinGate:
    """Forces the worst interleaving of two concurrent copies of one mutation at a hook in the server.

    `first_waits_for_twin`: the first copy to reach the hook waits until the second reaches it too (so both
    have passed every check before it); `second_waits_for_commit`: the second copy then waits until the
    first's receipt is committed. Waits are bounded; `fired` records which hooks really met.
    """

    def __init__(self, app):
        self.app, self.lock, self.arrivals, self.events, self.fired = app, threading.Lock(), {}, {}, []

    def arrive(self, hook: str, mutation_id) -> int:
        key = (hook, str(mutation_id))
        with self.lock:
            n = self.arrivals[key] = self.arrivals.get(key, 0) + 1
            event = self.events.setdefault(key, threading.Event())
        if n == 2:
            event.set()
            self.fired.append(hook)
        return n

    def first_waits_for_twin(self, hook: str, mutation_id, n: int) -> None:
        if n == 1:
            self.events[(hook, str(mutation_id))].wait(timeout=5)

    def wait_for_receipt(self, mutation_id, timeout: float = 5) -> bool:
        deadline = time.monotonic() + timeout
        with db.engine.connect() as connection:  # its own connection: sees what others committed
            while time.monotonic() < deadline:
                found = connection.scalar(select(func.count()).select_from(SyncReceipt)
                                          .where(SyncReceipt.mutation_id == uuid.UUID(str(mutation_id))))
                connection.rollback()
                if found:
                    return True
                time.sleep(0.01)
        return False


def send_twice_at_once(links, headers, mutations) -> list:
    body = json.dumps({"protocol_version": p.PROTOCOL_VERSION, "mutations": mutations}).encode()
    barrier = threading.Barrier(len(links))

    def send(link):
        barrier.wait(timeout=10)
        return link("POST", MUTATIONS, headers, body)

    with ThreadPoolExecutor(max_workers=len(links)) as pool:
        answers = [future.result(timeout=60) for future in [pool.submit(send, link) for link in links]]
    assert [a.status for a in answers] == [200] * len(links), [a.body for a in answers]
    return answers


@pytest.fixture
def twin_links(world, http_phone, live_server):
    """A phone's headers and two separate HTTP connections to the server."""
    client = http_phone(world["worker"])
    headers = {"Authorization": f"Bearer {client._meta('access_token')}", "Content-Type": "application/json"}
    links = [HttpTransport(live_server), HttpTransport(live_server)]
    yield client, headers, links
    for link in links:
        close_transport(link)


@pytest.fixture
def one_by_one(app, monkeypatch):
    """Creates through the one-by-one path (sync.push), whose hooks these tests drive; sync/bulk.py has its own."""
    monkeypatch.setitem(app.config, "SYNC_BULK_PUSH", False)


@pytest.mark.usefixtures("one_by_one")
def test_twin_committing_between_receipt_lookup_and_seq_check_is_a_duplicate(app, twin_links, monkeypatch):
    """§6 case 3, worst interleaving: the twin commits after this copy's receipt lookup but before its
    device_seq check; the answer is `duplicate`, not `device_seq_reuse`, and nothing is quarantined."""
    client, headers, links = twin_links
    gate, real_validate = TwinGate(app), push_module._validate

    def validate_in_lockstep(raw):
        n = gate.arrive("validate", raw["mutation_id"])
        gate.first_waits_for_twin("validate", raw["mutation_id"], n)
        if n == 2:
            assert gate.wait_for_receipt(raw["mutation_id"])
        return real_validate(raw)

    monkeypatch.setattr(push_module, "_validate", validate_in_lockstep)
    incident_id = client.report("06010", "twins", *point_in(0))
    client.add_note(incident_id, "a note")
    answers = send_twice_at_once(links, headers, client.outbox())
    assert gate.fired == ["validate", "validate"], "both copies passed their receipt lookup before either committed"
    for k in range(2):
        assert sorted(a.body["results"][k]["status"] for a in answers) == ["applied", "duplicate"]
    assert count(QuarantineItem) == 0 and count(Incident) == 1 and count(IncidentNote) == 1
    assert count(SyncReceipt) == 2


@pytest.mark.usefixtures("one_by_one")
def test_twin_losing_the_create_race_does_not_quarantine_its_later_mutations(app, twin_links, monkeypatch):
    """§6 case 3, worst interleaving: the copy that loses the race on `incident.create` (id collision, rolled
    back, retried as `duplicate`) must not treat the incident as quarantined for the rest of its batch."""
    client, headers, links = twin_links
    gate = TwinGate(app)
    real_create, real_note = push_module.APPLY["incident.create"], push_module.APPLY["note.add"]

    def create_in_lockstep(mutation, ctx):
        n = gate.arrive("create", mutation["mutation_id"])
        gate.first_waits_for_twin("create", mutation["mutation_id"], n)
        if n == 2:
            assert gate.wait_for_receipt(mutation["mutation_id"])  # it then finds the incident: id collision
        return real_create(mutation, ctx)

    def note_after_the_twin(mutation, ctx):
        if gate.arrive("note", mutation["mutation_id"]) == 1:
            gate.wait_for_receipt(mutation["mutation_id"], timeout=3)  # let the twin reach its note first
        return real_note(mutation, ctx)

    monkeypatch.setitem(push_module.APPLY, "incident.create", create_in_lockstep)
    monkeypatch.setitem(push_module.APPLY, "note.add", note_after_the_twin)
    incident_id = client.report("06010", "twins", *point_in(0))
    client.add_note(incident_id, "a note that must not be lost")
    answers = send_twice_at_once(links, headers, client.outbox())
    assert "create" in gate.fired
    results = [[a.body["results"][k] for a in answers] for k in range(2)]
    for k in range(2):
        assert sorted(r["status"] for r in results[k]) == ["applied", "duplicate"], results[k]
    assert count(QuarantineItem) == 0
    assert count(IncidentNote) == 1 and count(Incident) == 1


@pytest.mark.usefixtures("one_by_one")
def test_server_failure_after_three_of_ten_commits(world, http_phone, monkeypatch):
    """§6 case 2: the server fails (500) after 3 of 10 mutations committed; the retry is 3 `duplicate` + 7 `applied`."""
    client = http_phone(world["worker"])
    ids = [client.report("06010", f"report {i}", *point_in(i % 3)) for i in range(10)]
    real_create = push_module.APPLY["incident.create"]

    def create_then_crash_on_the_fourth(mutation, ctx):
        if str(mutation["incident_id"]) == ids[3]:
            raise RuntimeError("the worker process died here")
        return real_create(mutation, ctx)

    monkeypatch.setitem(push_module.APPLY, "incident.create", create_then_crash_on_the_fourth)
    with pytest.raises(SyncError) as failure:
        client.push()
    assert failure.value.status == 500 and failure.value.problem["code"] == "internal"
    assert len(client.outbox()) == 10 and client.results() == {}
    assert count(Incident) == 3 and count(SyncReceipt) == 3 and count(QuarantineItem) == 0
    db.session.rollback()
    assert set(map(str, db.session.scalars(select(Incident.id)))) == set(ids[:3])

    monkeypatch.setitem(push_module.APPLY, "incident.create", real_create)
    assert client.push() == {"duplicate": 3, "applied": 7}
    statuses = {r["incident_id"]: r["status"] for r in client.results().values()}
    assert statuses == {i: ("duplicate" if n < 3 else "applied") for n, i in enumerate(ids)}
    assert count(Incident) == 10 and count(SyncReceipt) == 10
    assert_exactly_once(client)


@dataclass
class PulledPage:
    before: int  # the cursor's seq sent
    after: int  # next_cursor's seq
    changes: list
    t1_committing: bool  # whether T1 had started to commit when the answer arrived


def test_commit_order_race_never_lets_a_puller_skip_a_late_commit(app, world, http_phone, live_server):
    """§6 case 20: T1 takes its sync_seq first and commits last while writers block behind it and a puller
    keeps pulling: no page passes T1's seq before T1 commits; every committed change is delivered, none skipped."""
    county = ensure_area("330522", "邻县", "county")
    elsewhere = ensure_area("330522101", "C镇", "township", county)  # T1's own case-number counter row
    db.session.commit()
    worker_id, dispatcher_id, elsewhere_id = world["worker"].id, world["dispatcher"].id, elsewhere.id
    seeder = http_phone(world["other_worker"], name="seeder")
    seeded = [seeder.report("06010", f"seed {i}", *point_in(i)) for i in range(3)]
    assert seeder.push() == {"applied": 3}
    puller = http_phone(world["worker"], name="puller")
    pull_headers = {"Authorization": f"Bearer {puller._meta('access_token')}"}
    writers = [http_phone(world["other_worker"], name=f"writer{i}") for i in range(3)]
    writer_batches = []
    for i, writer in enumerate(writers):
        writer.report("06010", f"reported during the race {i}", *point_in(i))
        writer.report("06010", f"and another {i}", *point_in((i + 1) % 3))
        writer_batches.append((
            {"Authorization": f"Bearer {writer._meta('access_token')}", "Content-Type": "application/json"},
            json.dumps({"protocol_version": p.PROTOCOL_VERSION, "mutations": writer.outbox()}).encode()))

    t1_id = uuid.uuid4()
    stamped, release, t1_committing, stop_pulling = (threading.Event() for _ in range(4))
    t1_seq: dict = {}

    def t1():
        with app.app_context():
            incidents.create_incident(
                incident_id=t1_id, reporter=db.session.get(User, worker_id), device=None, category_code="06010",
                description="T1: stamped first, committed last", location={"lon": 121.5, "lat": 29.0, "crs": "wgs84"},
                gps_accuracy_m=None, created_at_device=None, clock_suspect=False, mutation_id=None,
                township_id=elsewhere_id)
            db.session.execute(text("SET CONSTRAINTS ALL IMMEDIATE"))  # stamps now and keeps the counter locked
            t1_seq["seq"] = db.session.execute(text("SELECT sync_seq FROM incidents WHERE id = :id"),
                                               {"id": t1_id}).scalar_one()
            stamped.set()
            assert release.wait(timeout=60)
            t1_committing.set()
            db.session.commit()

    def push_batch(headers, body):
        link = HttpTransport(live_server, timeout=60)
        try:
            return link("POST", MUTATIONS, headers, body)
        finally:
            close_transport(link)

    def dispatch_update(incident_id):
        with app.app_context():
            incident = incidents.lock_incident(uuid.UUID(incident_id))
            incidents.change_fields(incident, {"status": "registered"}, actor=db.session.get(User, dispatcher_id),
                                    source="dispatch", mutation_id=None)
            db.session.commit()

    def pull_continuously() -> list[PulledPage]:
        link, cursor, pages = HttpTransport(live_server, timeout=60), None, []
        try:
            while True:
                final = stop_pulling.is_set()
                query = "?limit=4" + (f"&cursor={cursor}" if cursor else "")
                response = link("GET", CHANGES + query, pull_headers, None)
                assert response.status == 200, response.body
                pages.append(PulledPage(cursor_seq(app, cursor), cursor_seq(app, response.body["next_cursor"]),
                                        response.body["changes"], t1_committing.is_set()))
                cursor = response.body["next_cursor"]
                if final and not response.body["has_more"]:
                    return pages
                time.sleep(0.005)
        finally:
            close_transport(link)

    with ThreadPoolExecutor(max_workers=8) as pool:
        puller_future = pool.submit(pull_continuously)
        t1_future = pool.submit(t1)
        assert stamped.wait(timeout=30), t1_future.exception(timeout=0) if t1_future.done() else "T1 never stamped"
        writer_futures = [pool.submit(push_batch, *batch) for batch in writer_batches]
        writer_futures += [pool.submit(dispatch_update, incident_id) for incident_id in seeded]
        deadline = time.monotonic() + 20
        while count_lock_waiters() < len(writer_futures) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert count_lock_waiters() >= len(writer_futures), "the writers block behind T1"
        time.sleep(0.5)  # the puller keeps pulling while T1 holds its number
        assert not any(f.done() for f in writer_futures), "no writer can commit before T1"
        release.set()
        t1_future.result(timeout=60)
        answers = [f.result(timeout=60) for f in writer_futures[:3]]
        for f in writer_futures[3:]:
            f.result(timeout=60)
        stop_pulling.set()
        pages = puller_future.result(timeout=60)

    assert [a.status for a in answers] == [200] * 3
    assert [r["status"] for a in answers for r in a.body["results"]] == ["applied"] * 6
    seq1 = t1_seq["seq"]
    held = [page for page in pages if not page.t1_committing]
    assert len(held) >= 3, "the puller pulled while T1 held its number"
    assert all(page.after < seq1 for page in held), "no page passed T1's seq before T1 committed"
    for previous, page in zip(pages, pages[1:]):
        assert page.before == previous.after and page.after >= page.before
    delivered = [(c["id"], c["version"], c["seq"]) for page in pages for c in page.changes if c["entity"] == "incident"]
    for page in pages:
        assert all(page.before < c["seq"] <= page.after for c in page.changes), "changes stay inside the page's range"
    assert len(delivered) == len(set(delivered))
    db.session.rollback()
    committed = db.session.execute(select(Incident.id, Incident.version, Incident.sync_seq)).all()
    committed = {(str(i), v, s) for i, v, s in committed}
    assert len(committed) == 3 + 6 + 1
    assert (str(t1_id), 1, seq1) in committed
    assert all(seq > seq1 for i, _, seq in committed if i != str(t1_id)), "every writer committed after T1"
    assert committed <= set(delivered), "every committed change was pulled at its final seq (nothing skipped)"
    assert {i for i, _, _ in delivered} == {i for i, _, _ in committed}


def count_lock_waiters() -> int:
    db.session.rollback()
    return db.session.scalar(text(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"))


BULK = 2000
BULK_INSERT = text("""
INSERT INTO incidents (id, case_number, version, category_code_raw, description, location, raw_location, cell_id,
                       township_id, is_outside_grid, status, reporter_id, clock_suspect)
SELECT gen_random_uuid(), 'BULK' || lpad(n::text, 6, '0'), 1, '06010', 'bulk ' || n,
       ST_SetSRID(ST_MakePoint((CAST(:lons AS float8[]))[1 + n % 3], :lat), 4326),
       jsonb_build_object('lon', (CAST(:lons AS float8[]))[1 + n % 3], 'lat', :lat, 'crs', 'wgs84'),
       (CAST(:cells AS int[]))[1 + n % 3], :township, false, 'reported', :reporter, false
FROM generate_series(1, :n) AS n
""")


def test_many_rows_in_one_commit_are_paged_without_skips(world, http_phone):
    """§6 case 21: 2,000 rows inserted, then all updated, each in one transaction: pages of 500 deliver
    every row exactly once, none lost at a page boundary."""
    db.session.execute(BULK_INSERT, {
        "lons": [point_in(i)[0] for i in range(3)], "lat": point_in(0)[1], "cells": [c.id for c in world["cells_a"][:3]],
        "township": world["township_a"].id, "reporter": world["other_worker"].id, "n": BULK})
    db.session.commit()
    client = http_phone(world["worker"])
    client.transport = recorder = RecordingTransport(client.transport)

    def pulled_once(version):
        recorder.pages.clear()
        client.pull(limit=500)
        assert [len(page["changes"]) for page in recorder.pages] == [500] * (BULK // 500)
        assert [page["has_more"] for page in recorder.pages] == [True] * (BULK // 500 - 1) + [False]
        seqs = [c["seq"] for page in recorder.pages for c in page["changes"]]
        assert seqs == sorted(seqs) and len(set(seqs)) == BULK
        ids = [c["id"] for page in recorder.pages for c in page["changes"]]
        assert len(ids) == len(set(ids)) == BULK, "each row exactly once"
        assert {c["version"] for page in recorder.pages for c in page["changes"]} == {version}

    pulled_once(1)
    db.session.execute(text("UPDATE incidents SET status = 'dispatched', version = version + 1"))  # a bulk dispatch
    db.session.commit()
    pulled_once(2)
    assert {r["version"] for r in client.incidents().values()} == {2} and len(client.incidents()) == BULK
    assert {r["data"]["status"] for r in client.incidents().values()} == {"dispatched"}


def test_five_updates_between_pulls_arrive_once_at_the_latest_version(app, world, http_phone):
    """§6 case 22: an incident updated 5 times between two pulls is delivered once, at its latest version,
    and the cursor still advances past it."""
    reporter = http_phone(world["other_worker"], name="reporter")
    incident_id = reporter.report("06010", "version 1", *point_in(1))
    reporter.push()
    client = http_phone(world["worker"])
    client.pull()
    assert client.incidents()[incident_id]["version"] == 1
    for version in range(2, 7):
        incident = incidents.lock_incident(uuid.UUID(incident_id))
        incidents.change_fields(incident, {"description": f"version {version}",
                                           "status": "registered" if version % 2 else "verifying"},
                                actor=world["dispatcher"], source="dispatch", mutation_id=None)
        db.session.commit()
    client.transport = recorder = RecordingTransport(client.transport)
    client.pull()
    changes = [c for page in recorder.pages for c in page["changes"] if c["entity"] == "incident"]
    db.session.rollback()
    stored = db.session.get(Incident, uuid.UUID(incident_id))
    assert [(c["id"], c["version"], c["seq"]) for c in changes] == [(incident_id, 6, stored.sync_seq)]
    assert changes[0]["data"]["description"] == "version 6"
    assert cursor_seq(app, client._meta("cursor")) >= stored.sync_seq
    assert client.incidents()[incident_id]["version"] == 6
    assert count(IncidentRevision, IncidentRevision.incident_id == stored.id) == 6  # the history is all kept
