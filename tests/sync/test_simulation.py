"""A seeded random simulation: phones, dispatch and a flaky network, then the global invariant (SYNC.md §6).

Several phones (four workers with different cells, plus a second install of one of them) report, edit and
add notes offline; pushes and pulls lose their answers at random; old batches are replayed and shuffled;
dispatch edits status, description and location; workers are reassigned; the server "restarts" (a fresh
app with its own connection pool) and phones are killed and reopened from their SQLite store. At the end
every outbox is drained and every phone pulls to the end; then:

- every mutation a phone generated has exactly one receipt, or one quarantine record without a receipt;
- no incident exists twice, and there is one incident per applied create;
- each phone's local incidents (ids, versions) and notes equal the server's in its user's current scope,
  and `verify` says "ok".

The seed is printed; replay a failure with SYNC_SIM_SEED=<seed> (SYNC_SIM_STEPS changes the length).
"""
import gzip
import json
import os
import random
import uuid

import pytest
from sqlalchemy import bindparam, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import String

from gridapp import create_app
from gridapp.extensions import db
from gridapp.models import INCIDENT_STATUSES, Incident, QuarantineItem, SyncReceipt, User
from gridapp.services import incidents
from gridapp.services.scope import current_scope
from gridapp.services.users import assign_cells
from sync.client import PhoneClient, WsgiTransport
from sync.protocol import PROTOCOL_VERSION
from sync.pull import server_buckets
from tests.factories import CELL, ORIGIN_A, ORIGIN_B, PASSWORD, make_user, make_world
from tests.sync.phones import assert_exactly_once

SEED = int(os.environ.get("SYNC_SIM_SEED", "20261122"))
STEPS = int(os.environ.get("SYNC_SIM_STEPS", "250"))
MUTATIONS, CHANGES = "/api/v1/sync/mutations", "/api/v1/sync/changes"

_SCOPED_NOTES = text("""
SELECT CAST(n.id AS text) FROM incident_notes n JOIN incidents i ON i.id = n.incident_id
LEFT JOIN grid_cells c ON c.id = i.cell_id
WHERE i.voided_at IS NULL AND (c.code = ANY(:codes) OR i.reporter_id = :uid)
""").bindparams(bindparam("codes", type_=ARRAY(String)))


class LostAnswer(ConnectionResetError):
    """The server processed the request; its answer never reached the phone."""


class FlakyLink:
    """A phone's link to whichever server is running: it can lose the next answer, and it keeps the
    batches the phone sent so they can be replayed later."""

    def __init__(self, server):
        self.server = server
        self.lose_after: int | None = None  # lose the answer after this many more sync answers got through
        self.sent_batches: list[list[dict]] = []

    def __call__(self, method, path, headers, body):
        if path.startswith(MUTATIONS) and body:
            raw = gzip.decompress(body) if headers.get("Content-Encoding") == "gzip" else body
            self.sent_batches.append(json.loads(raw)["mutations"])
        response = self.server(method, path, headers, body)
        if self.lose_after is not None and path.startswith((MUTATIONS, CHANGES)):
            if self.lose_after == 0:
                self.lose_after = None
                raise LostAnswer("connection reset after the server answered")
            self.lose_after -= 1
        return response


class SimPhone:
    """One install: the reference client over a flaky link, and every mutation_id it ever generated."""

    def __init__(self, name, user, path, server):
        self.name, self.user, self.path = name, user, path
        self.link = FlakyLink(server)
        self.client = self.open()
        self.generated: set[str] = set()

    def open(self) -> PhoneClient:
        client = PhoneClient(self.link, self.path)
        client.db.execute("PRAGMA synchronous = OFF")  # survives the app being killed, not the OS: fast enough here
        return client

    def remember_new_mutations(self, before: set[str]) -> None:
        self.generated |= {m["mutation_id"] for m in self.client.outbox()} - before

    def reopen(self) -> None:
        """The phone app is killed and started again: everything comes back from its SQLite file."""
        self.client.db.close()
        self.client = self.open()


class Simulation:
    def __init__(self, app, world, phones, rng, fresh_apps):
        self.app, self.world, self.phones, self.rng = app, world, phones, rng
        self.fresh_apps = fresh_apps
        self.server_app = app
        self.stats: dict[str, int] = {}

    def note(self, message: str) -> None:
        print(message)  # pytest shows the run's log when it fails

    def bump(self, key: str) -> None:
        self.stats[key] = self.stats.get(key, 0) + 1

    # --- places ------------------------------------------------------------------------------------------
    def cells_of(self, township: str):
        return self.world["cells_a"] if township == "a" else self.world["cells_b"]

    def random_point(self, township: str, cell_index: int | None = None) -> tuple[float, float]:
        west, north = ORIGIN_A if township == "a" else ORIGIN_B
        index = self.rng.randrange(6) if cell_index is None else cell_index
        fx, fy = self.rng.uniform(0.1, 0.9), self.rng.uniform(0.1, 0.9)
        return west + CELL * (index % 3 + fx), north - CELL * (index // 3 + fy)

    def township_of(self, phone: SimPhone) -> str:
        return "b" if phone.user.area.code == self.world["township_b"].code else "a"

    # --- what phones do offline ---------------------------------------------------------------------------
    def report(self, phone: SimPhone) -> None:
        township, roll = self.township_of(phone), self.rng.random()
        db.session.expire_all()
        own = [self.cells_of(township).index(c) for c in phone.user.cells]
        if roll < 0.03:  # in the other township: quarantined as out_of_scope
            point, where = self.random_point("b" if township == "a" else "a"), "other township"
        elif roll < 0.10:  # outside every cell: kept, flagged, the reporter's own
            point, where = (ORIGIN_A[0] - 0.05 if township == "a" else ORIGIN_B[0] + 0.05, ORIGIN_A[1] - 0.0005), "off grid"
        elif roll < 0.30 or not own:
            point, where = self.random_point(township), "township"
        else:
            point, where = self.random_point(township, self.rng.choice(own)), "own cell"
        incident_id = phone.client.report("06010", f"{phone.name}: report ({where})", *point,
                                          accuracy=round(self.rng.uniform(2, 40), 1))
        self.note(f"{phone.name} reports {incident_id[:8]} ({where})")

    def editable(self, phone: SimPhone) -> list[str]:
        """Incidents this phone can edit: its local copies and its own creates still in the outbox."""
        pending = [m["incident_id"] for m in phone.client.outbox() if m["type"] == "incident.create"]
        return sorted(set(phone.client.incidents()) | set(pending))

    def edit(self, phone: SimPhone) -> None:
        choices = self.editable(phone)
        if not choices:
            return self.report(phone)
        incident_id, roll = self.rng.choice(choices), self.rng.random()
        if roll < 0.65:
            phone.client.edit(incident_id, description=f"{phone.name} rewrote this ({self.rng.randrange(10**6)})")
            what = "description"
        elif roll < 0.85:
            lon, lat = self.random_point(self.township_of(phone))
            phone.client.edit(incident_id, location={"lon": lon, "lat": lat, "crs": "wgs84"})
            what = "location"
        else:
            phone.client.edit(incident_id, status=self.rng.choice(INCIDENT_STATUSES))  # dispatch-owned
            what = "status"
        self.note(f"{phone.name} edits {what} of {incident_id[:8]}")

    def add_note(self, phone: SimPhone) -> None:
        choices = self.editable(phone)
        if not choices:
            return self.report(phone)
        incident_id = self.rng.choice(choices)
        phone.client.add_note(incident_id, f"{phone.name} notes {self.rng.randrange(10**6)}")
        self.note(f"{phone.name} adds a note to {incident_id[:8]}")

    # --- the network ---------------------------------------------------------------------------------------
    def push(self, phone: SimPhone) -> None:
        phone.link.lose_after = self.rng.randrange(3) if self.rng.random() < 0.3 else None
        try:
            counts = phone.client.push(batch_size=self.rng.choice([3, 10, 100]))
            self.note(f"{phone.name} pushes: {counts}")
        except LostAnswer:
            self.bump("lost push answers")
            self.note(f"{phone.name} pushes; an answer is lost (outbox {len(phone.client.outbox())})")
        finally:
            phone.link.lose_after = None

    def pull(self, phone: SimPhone) -> None:
        phone.link.lose_after = self.rng.randrange(3) if self.rng.random() < 0.25 else None
        try:
            pages = phone.client.pull(limit=self.rng.choice([2, 5, 50, None]))
        except LostAnswer:
            self.bump("lost pull answers")
            self.note(f"{phone.name} pulls; a page is lost")
            return
        finally:
            phone.link.lose_after = None
        self.note(f"{phone.name} pulls {pages} page(s)")
        self.check_phone(phone, when=f"after {phone.name}'s pull")

    def replay(self, phone: SimPhone) -> None:
        """Send an old batch again (§6 case 5), sometimes reordered: what has a receipt answers duplicate."""
        if not phone.link.sent_batches:
            return
        batch = list(self.rng.choice(phone.link.sent_batches))
        if self.rng.random() < 0.5:
            self.rng.shuffle(batch)
        ids = [uuid.UUID(m["mutation_id"]) for m in batch]
        db.session.rollback()
        receipts = {str(r.mutation_id): r.status for r in
                    db.session.scalars(select(SyncReceipt).where(SyncReceipt.mutation_id.in_(ids)))}
        before = versions()
        results = phone.client._call("POST", MUTATIONS, {"protocol_version": PROTOCOL_VERSION,
                                                       "mutations": batch}).body["results"]
        for mutation, result in zip(batch, results, strict=True):
            if mutation["mutation_id"] in receipts:
                assert (result["status"], result["original_status"]) == ("duplicate", receipts[mutation["mutation_id"]])
        if len(receipts) == len(batch):
            assert versions() == before, "a replay of applied mutations changes nothing"
        self.bump("replayed batches")
        self.note(f"{phone.name} replays an old batch of {len(batch)}: {sorted(r['status'] for r in results)}")

    # --- the dispatch centre and the administrators ---------------------------------------------------------
    def dispatch(self) -> None:
        db.session.rollback()
        live = db.session.scalars(select(Incident.id).where(Incident.voided_at.is_(None))
                                  .order_by(Incident.case_number)).all()
        if not live:
            return
        incident = incidents.lock_incident(self.rng.choice(live))
        roll = self.rng.random()
        if roll < 0.5:
            values = {"status": self.rng.choice(INCIDENT_STATUSES)}
        elif roll < 0.8:
            values = {"description": f"dispatch wording {self.rng.randrange(10**6)}"}
        else:
            township = "b" if incident.township_id == self.world["township_b"].id else "a"
            lon, lat = self.random_point(township)
            values = {"location": {"lon": lon, "lat": lat, "crs": "wgs84"}}
        incidents.change_fields(incident, values, actor=self.world["dispatcher"], source="dispatch", mutation_id=None)
        db.session.commit()
        self.note(f"dispatch sets {sorted(values)} of {str(incident.id)[:8]}")

    def reassign(self) -> None:
        worker = self.rng.choice([self.world["w1"], self.world["w2"], self.world["w3"]])
        cells = self.rng.sample(self.world["cells_a"], self.rng.randint(1, 3))
        assign_cells(worker, cells)
        db.session.commit()
        self.note(f"{worker.username} now holds {sorted(c.code[-3:] for c in cells)}")

    def restart_server(self) -> None:
        """The server process dies (its pool with it) and another one serves the phones."""
        leaving = self.server_app
        if len(self.fresh_apps) < 2:
            self.fresh_apps.append(fresh_app(self.app))
        self.server_app = self.rng.choice([a for a in [self.app, *self.fresh_apps] if a is not leaving])
        if leaving is not self.app:
            with leaving.app_context():
                db.engine.dispose()
        for phone in self.phones:
            phone.link.server = WsgiTransport(self.server_app)
        self.bump("server restarts")
        self.note("the server restarts")

    def reopen_phone(self, phone: SimPhone) -> None:
        phone.reopen()
        self.bump("phone restarts")
        self.note(f"{phone.name} is killed and reopened")

    # --- the run -------------------------------------------------------------------------------------------
    def step(self) -> None:
        phone = self.rng.choice(self.phones)
        before = {m["mutation_id"] for m in phone.client.outbox()}
        action = self.rng.choices(
            ["report", "edit", "note", "push", "pull", "replay", "dispatch", "reassign", "restart", "reopen"],
            weights=[22, 18, 8, 20, 14, 4, 9, 2, 1, 2])[0]
        self.bump(action)
        {"report": lambda: self.report(phone), "edit": lambda: self.edit(phone), "note": lambda: self.add_note(phone),
         "push": lambda: self.push(phone), "pull": lambda: self.pull(phone), "replay": lambda: self.replay(phone),
         "dispatch": self.dispatch, "reassign": self.reassign, "restart": self.restart_server,
         "reopen": lambda: self.reopen_phone(phone)}[action]()
        phone.remember_new_mutations(before)

    def drain(self, monkeypatch) -> None:
        """Back on the main server, time passes (updates whose incident never came are quarantined), and
        every phone pushes until its outbox is empty and pulls to the end."""
        if self.server_app is not self.app:
            self.restart_server_to(self.app)
        monkeypatch.setitem(self.app.config, "SYNC_UNKNOWN_INCIDENT_DAYS", 0)
        for phone in self.phones:
            for _ in range(5):
                phone.client.push()
                if not phone.client.outbox():
                    break
            assert phone.client.outbox() == [], (phone.name, phone.client.outbox())
        for phone in self.phones:
            phone.client.pull()

    def restart_server_to(self, target) -> None:
        for phone in self.phones:
            phone.link.server = WsgiTransport(target)
        self.server_app = target

    # --- checks --------------------------------------------------------------------------------------------
    def check_phone(self, phone: SimPhone, when: str) -> None:
        db.session.rollback()
        user = db.session.get(User, phone.user.id)
        local = {i: r["version"] for i, r in phone.client.incidents().items()}
        server = {i: v for pairs in server_buckets(user).values() for i, v in pairs}
        assert local == server, (when, phone.name, diff(local, server), explain(set(local) ^ set(server)))
        _, codes = current_scope(user)
        notes = set(db.session.scalars(_SCOPED_NOTES, {"codes": sorted(codes), "uid": user.id}))
        local_notes = set(phone.client.notes())
        assert local_notes == notes, (when, phone.name, diff(local_notes, notes), explain_notes(local_notes ^ notes))


def versions() -> dict:
    db.session.rollback()
    return dict(db.session.execute(select(Incident.id, Incident.version)).all())


def diff(local, server) -> dict:
    local, server = dict.fromkeys(local, None) if isinstance(local, set) else local, \
        dict.fromkeys(server, None) if isinstance(server, set) else server
    return {"only on the phone": sorted(set(local) - set(server)),
            "only on the server": sorted(set(server) - set(local)),
            "other version": sorted(i for i in set(local) & set(server) if local[i] != server[i])}


def explain(incident_ids) -> list:
    """What the server holds about some incidents: reporter, cell, version, sync_seq, the scope exits."""
    rows = []
    for incident_id in sorted(incident_ids):
        incident = db.session.get(Incident, uuid.UUID(incident_id))
        exits = db.session.execute(text(
            "SELECT old_cell_code, new_cell_code, sync_seq FROM sync_scope_exits WHERE incident_id = :i ORDER BY id"),
            {"i": incident.id}).all() if incident else []
        rows.append((incident_id[:8], incident.reporter.username, incidents.cell_code(incident), incident.version,
                     incident.sync_seq, [tuple(e) for e in exits]) if incident else (incident_id[:8], "not on server"))
    return rows


def explain_notes(note_ids) -> list:
    """What the server holds about some notes: their incident, author and sync_seq."""
    rows = db.session.execute(text("""
        SELECT CAST(n.id AS text), CAST(n.incident_id AS text), u.username, n.sync_seq FROM incident_notes n
        JOIN users u ON u.id = n.author_id WHERE CAST(n.id AS text) = ANY(:ids)"""), {"ids": sorted(note_ids)}).all()
    return [(note[:8], author, seq, explain([incident_id])) for note, incident_id, author, seq in rows]


def fresh_app(app):
    """Another server process: the same configuration (and cursor key), its own engine and Redis client."""
    keys = ("TESTING", "SECRET_KEY", "SQLALCHEMY_DATABASE_URI", "REDIS_URL", "ARGON2_TIME_COST", "ARGON2_MEMORY_KIB")
    return create_app({key: app.config[key] for key in keys})


@pytest.fixture
def fresh_apps():
    made = []
    yield made
    for other in made:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()
        other.extensions["redis"].close()


@pytest.fixture
def world(app):
    world = make_world(cols=3, rows=2)
    a, b = world["cells_a"], world["cells_b"]
    world["w1"] = make_user("w1", "grid_worker", world["township_a"], cells=a[0:2])
    world["w2"] = make_user("w2", "grid_worker", world["township_a"], cells=a[2:4])
    world["w3"] = make_user("w3", "grid_worker", world["township_a"], cells=a[4:6])
    world["wb"] = make_user("wb", "grid_worker", world["township_b"], cells=b[0:3])
    world["dispatcher"] = make_user("dispatcher", "dispatcher", world["county"])
    db.session.commit()
    return world


def test_random_simulation_ends_exactly_once_and_converged(app, world, tmp_path, fresh_apps, monkeypatch):
    """SYNC.md §6 global invariant under random faults: nothing lost, nothing duplicated, every phone converged."""
    print(f"SYNC_SIM_SEED={SEED} SYNC_SIM_STEPS={STEPS}")
    rng, ids = random.Random(SEED), random.Random(SEED + 1)
    # Ids minted on phones (and devices) come from the seed too, so a seed replays the same run.
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=ids.getrandbits(128), version=4))
    server = WsgiTransport(app)
    phones = [SimPhone(name, world[user], str(tmp_path / f"{name}.sqlite"), server)
              for name, user in (("w1", "w1"), ("w1-second", "w1"), ("w2", "w2"), ("w3", "w3"), ("wb", "wb"))]
    for phone in phones:
        phone.client.register(phone.user.username, PASSWORD)
    sim = Simulation(app, world, phones, rng, fresh_apps)
    for number in range(STEPS):
        sim.note(f"-- step {number}")
        if number == STEPS // 2:
            sim.restart_server()  # at least once per run
        sim.step()
    sim.drain(monkeypatch)
    print(f"SYNC_SIM_SEED={SEED}: {sim.stats}")

    # Every mutation generated has exactly one receipt, or one quarantine record and no receipt.
    assert_exactly_once(*(phone.client for phone in phones))
    db.session.rollback()
    for phone in phones:
        assert set(phone.client.results()) == phone.generated, phone.name
        for mutation_id, result in phone.client.results().items():
            receipts = db.session.scalars(select(SyncReceipt).where(SyncReceipt.mutation_id == mutation_id)).all()
            quarantined = db.session.scalar(select(func.count()).select_from(QuarantineItem)
                                            .where(QuarantineItem.mutation_id == mutation_id))
            if receipts:
                status = result.get("original_status", result["status"])
                assert receipts[0].status == status, (phone.name, mutation_id, result)
                assert quarantined == (1 if status == "quarantined" else 0), (phone.name, mutation_id, result)
            else:
                assert result["status"] == "quarantined" and quarantined == 1, (phone.name, mutation_id, result)

    # No incident twice: one row per applied create, and every create's id used once.
    applied_creates = db.session.scalars(select(SyncReceipt.mutation_id).where(
        SyncReceipt.status == "applied", SyncReceipt.result["case_number"].astext.is_not(None))).all()
    total = db.session.scalar(select(func.count()).select_from(Incident))
    distinct = db.session.scalar(select(func.count(func.distinct(Incident.id))))
    case_numbers = db.session.scalar(select(func.count(func.distinct(Incident.case_number))))
    assert total == distinct == case_numbers == len(applied_creates)
    assert total > 20, "the simulation created a fair number of incidents"

    # Every phone holds exactly its user's current scope, and says so.
    for phone in phones:
        sim.check_phone(phone, when="at the end")
        for _ in range(3):  # "stale" only when another run committed since the pull
            outcome = phone.client.verify(repair=False)
            if outcome["status"] != "stale":
                break
            phone.client.pull()
        assert outcome["status"] == "ok", (phone.name, outcome)
    for key in ("lost push answers", "lost pull answers", "replayed batches", "reassign", "dispatch",
                "server restarts"):
        assert sim.stats.get(key, 0) > 0, f"the run exercised {key} (seed {SEED})"
