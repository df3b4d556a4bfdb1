"""The set-based push of plain creates (sync/bulk.py): the same results and rows as one by one, exactly once."""
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import IntegrityError

from geo.crs import from_wgs84
from gridapp.extensions import db
from gridapp.models import Incident, IncidentRevision, SyncReceipt
from gridapp.services import incidents, workflow
from gridapp.services.categories import import_catalogue, parse_catalogue_csv
from gridapp.services.demo import DEFAULT_CATALOGUE
from gridapp.services.grids import cell_at
from sync import bulk
from sync import protocol as p
from sync.client import HttpTransport, PhoneClient, SyncError
from tests.dashboard.test_maptiles import counts_are_exact
from tests.factories import CELL, ORIGIN_A, ORIGIN_B, PASSWORD, make_user, make_world
from tests.sync.phones import assert_exactly_once, phone, push_outbox_at_once
from tests.sync.test_faults import close_transport

WEST, NORTH = ORIGIN_A
IN_CELL_0 = (WEST + CELL * 0.5, NORTH - CELL * 0.5)
IN_CELL_1 = (WEST + CELL * 1.5, NORTH - CELL * 0.5)
METRE = 1.0436e-5  # of longitude at 30.5°N


@pytest.fixture
def world(app):
    world = make_world(cols=3, rows=2)
    import_catalogue(parse_catalogue_csv(DEFAULT_CATALOGUE.read_text(encoding="utf-8")))
    world["worker"] = make_user("worker", "grid_worker", world["township_a"], cells=world["cells_a"][:3])
    db.session.commit()
    return world


def push_raw(client, mutations, **headers):
    body = {"protocol_version": p.PROTOCOL_VERSION, "mutations": mutations}
    return client._call("POST", "/api/v1/sync/mutations", body).body["results"]


def count(model):
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(model))


# --- the same as one by one ---------------------------------------------------------------------------
def mixed_batch(client, tmp_path) -> tuple[dict, list[dict]]:
    """Return a first report (pushed before the batch) and a batch mixing every kind of item."""
    def take() -> list[dict]:
        mutations = client.outbox()
        client.db.execute("DELETE FROM outbox")
        client.db.commit()
        return mutations

    client.report("06010", "first, pushed before", *IN_CELL_0)
    [first] = take()
    near_first = client.report("06010", "10 m from the first", IN_CELL_0[0] + 10 * METRE, IN_CELL_0[1])
    b = client.report("06010", "b", *IN_CELL_1)
    client.report("06010", "c, 20 m from b: its duplicate", IN_CELL_1[0] + 20 * METRE, IN_CELL_1[1])
    client.report("06010", "d, 5 m from b, 15 m from c: b is nearer", IN_CELL_1[0] - 5 * METRE, IN_CELL_1[1])
    client.report("06012", "another category beside b", IN_CELL_1[0] + 1 * METRE, IN_CELL_1[1])
    client.report("06010", "outside every cell", WEST - 0.01, NORTH)
    client.report("99999", "unknown category", *IN_CELL_0)
    client.report("06010", "in township B's grid", ORIGIN_B[0] + CELL * 0.5, ORIGIN_B[1] - CELL * 0.5)
    client.report("06010", "amap fix", *from_wgs84(IN_CELL_1[0], IN_CELL_1[1] - CELL * 0.2, "gcj02"), crs="gcj02")
    client.report("06010", "with a party", *IN_CELL_0, party={"name": "张三", "phone": "138 0000 0000"})
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"\xff\xd8\xff" + b"x" * 100)
    client.report("06010", "with a photo", *IN_CELL_1, photos=[str(photo)])
    client.edit(b, description="b, edited")
    client.add_note(near_first, "a note")
    later = client.report("06010", "e: its edit comes first", *IN_CELL_0)
    client.edit(later, description="e, edited")
    client.report("06010", "after everything", *IN_CELL_1)
    batch = take()
    create_e, edit_e = batch[-3], batch[-2]
    batch[-3], batch[-2] = edit_e, create_e  # the edit arrives before its create: retry
    seq = max(m["device_seq"] for m in batch)
    invalid = {**batch[1], "mutation_id": str(uuid.uuid4()), "device_seq": seq + 1, "incident_id": str(uuid.uuid4()),
               "data": {"category": "06010"}}  # no location
    changed = {**first, "data": {**first["data"], "description": "another body"}}  # mutation_id reuse
    seq_reuse = {**batch[2], "mutation_id": str(uuid.uuid4()), "incident_id": str(uuid.uuid4()),
                 "device_seq": first["device_seq"]}
    same_id_twice = {**batch[3], "mutation_id": str(uuid.uuid4()), "device_seq": seq + 2}  # incident id collision
    batch = [first, *batch[:4], changed, invalid, *batch[4:8], seq_reuse, same_id_twice, *batch[8:], "not an object"]
    return first, batch


def snapshot() -> dict:
    """Every row the push wrote, without what differs between two runs (times, sync_seq values: their order)."""
    db.session.expire_all()
    queries = {
        "incidents": """SELECT id, case_number, version, category_id, category_code_raw, description,
            ST_AsEWKT(location), raw_location, gps_accuracy_m, cell_id, township_id, is_outside_grid, status,
            likely_duplicate_of, party_name, party_phone, party_id_number, reporter_id, device_id,
            created_at_device, clock_suspect, rank() OVER (ORDER BY sync_seq) FROM incidents ORDER BY id""",
        "revisions": "SELECT incident_id, version, mutation_id, source, actor_id, changes FROM incident_revisions "
                     "ORDER BY incident_id, version",
        "receipts": "SELECT mutation_id, device_id, device_seq, user_id, request_sha256, status, result "
                    "FROM sync_receipts ORDER BY mutation_id",
        "quarantine": "SELECT id, mutation_id, device_id, user_id, township_id, incident_id, payload, payload_sha256, "
                      "code, detail FROM sync_quarantine ORDER BY id",
        "notes": "SELECT id, incident_id, text FROM incident_notes ORDER BY id",
        "deferrals": "SELECT mutation_id FROM sync_deferrals ORDER BY mutation_id",
        "photos": "SELECT id, incident_id FROM incident_photos ORDER BY id",
        "case numbers": "SELECT county_code, day, last FROM case_number_counters ORDER BY 1, 2",
    }
    return {name: [tuple(row) for row in db.session.execute(text(sql))] for name, sql in queries.items()}


def by_rank(results: list[dict]) -> list[dict]:
    """Replace applied_seq values by their rank: the order matters, not the numbers."""
    seqs = sorted({r["applied_seq"] for r in results if "applied_seq" in r})
    return [{**r, "applied_seq": seqs.index(r["applied_seq"])} if "applied_seq" in r else r for r in results]


def forget_pushes():
    db.session.execute(text("TRUNCATE incidents, incident_revisions, incident_notes, incident_photos, sync_receipts, "
                            "sync_quarantine, sync_deferrals, sync_conflicts, sync_scope_exits, case_number_counters "
                            "RESTART IDENTITY CASCADE"))
    db.session.commit()


def push_both_ways(app, client, tmp_path, monkeypatch, read=snapshot):
    """Push the mixed batch one by one, then set-based, each from the same start (its first report stored);
    return ((results, read()) one by one, (results, read()) set-based)."""
    first, batch = mixed_batch(client, tmp_path)
    runs = {}
    for set_based in (False, True):
        monkeypatch.setitem(app.config, "SYNC_BULK_PUSH", set_based)
        forget_pushes()
        assert [r["status"] for r in push_raw(client, [first])] == ["applied"]
        runs[set_based] = by_rank(push_raw(client, batch)), read()
    return runs[False], runs[True]


def test_mixed_batch_gives_the_same_results_and_rows_as_one_by_one(app, world, tmp_path, monkeypatch):
    client = phone(app, tmp_path, world["worker"])
    (one_by_one, rows_one_by_one), (set_based, rows_set_based) = push_both_ways(app, client, tmp_path, monkeypatch)
    assert set_based == one_by_one
    assert rows_set_based == rows_one_by_one
    statuses = [r["status"] for r in set_based]
    assert statuses.count("applied") == 14 and statuses.count("duplicate") == 1 and statuses.count("retry") == 1
    codes = {r.get("code") for r in set_based if r["status"] == "quarantined"}
    assert codes == {p.MUTATION_ID_REUSE, p.VALIDATION_FAILED, p.OUT_OF_SCOPE, p.DEVICE_SEQ_REUSE, p.ID_COLLISION}

    # Duplicates: the first (stored before), then an earlier report of the batch, never a later one.
    def incident(description):
        return db.session.scalar(select(Incident).where(Incident.description.startswith(description)))
    assert incident("10 m from the first").likely_duplicate_of == incident("first").id
    b = incident("b")
    assert b.likely_duplicate_of is None
    assert incident("c, 20 m").likely_duplicate_of == b.id and incident("d, 5 m").likely_duplicate_of == b.id
    assert incident("another category").likely_duplicate_of is None
    assert incident("outside").is_outside_grid and incident("outside").township_id == world["township_a"].id


def test_set_based_creates_are_numbered_stamped_and_receipted_in_batch_order(app, world, tmp_path):
    client = phone(app, tmp_path, world["worker"])
    ids = [client.report("06010", f"report {i}", *(IN_CELL_0 if i % 2 else IN_CELL_1)) for i in range(30)]
    assert client.push() == {"applied": 30}
    rows = db.session.execute(select(Incident.id, Incident.case_number, Incident.sync_seq)
                              .order_by(Incident.sync_seq)).all()
    assert [str(row.id) for row in rows] == ids
    assert [row.case_number[-5:] for row in rows] == [f"{n:05d}" for n in range(1, 31)]
    seqs = [row.sync_seq for row in rows]
    assert seqs == list(range(seqs[0], seqs[0] + 30))
    assert db.session.scalar(text("SELECT seq FROM sync_counter")) == seqs[-1]
    assert count(IncidentRevision) == 30 and count(SyncReceipt) == 30
    assert {r["applied_seq"] for r in client.results().values()} == set(seqs)
    assert_exactly_once(client)
    # The run's incidents go in as one INSERT statement: the map counts (a statement-level trigger over the
    # statement's new rows) count each of them once, at every level.
    assert sum(counts_are_exact().values()) == 30


def test_only_the_incidents_are_written_while_the_run_holds_the_sync_counter(app, world, tmp_path):
    """From the counter UPDATE to COMMIT every other push waits: receipts and revisions go in before it."""
    client = phone(app, tmp_path, world["worker"])
    for i in range(3):
        client.report("06010", f"report {i}", *IN_CELL_0)
    statements = []

    def record(conn, cursor, statement, *args):
        statements.append(statement.split("(")[0].split()[:3])

    event.listen(db.engine, "before_cursor_execute", record)
    event.listen(db.engine, "commit", lambda conn: statements.append(["COMMIT"]))
    try:
        assert client.push() == {"applied": 3}
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    start = statements.index(["UPDATE", "sync_counter", "SET"])
    assert statements[start + 1:start + 3] == [["INSERT", "INTO", "incidents"], ["COMMIT"]]
    assert statements.index(["INSERT", "INTO", "incident_revisions"]) < start
    assert count(IncidentRevision) == 3


def test_a_deferred_revision_key_is_still_checked_at_commit(app, world):
    incident_id = uuid.uuid4()
    revision = {"incident_id": incident_id, "version": 1, "mutation_id": None, "source": "device",
                "actor_id": world["worker"].id, "changes": {}}
    db.session.execute(bulk._DEFER_REVISION_KEY_SQL)
    bulk.insert_rows(IncidentRevision.__table__, [revision])  # no incident yet: accepted until COMMIT
    with pytest.raises(IntegrityError, match="fk_incident_revisions_incident_id_incidents"):
        db.session.commit()
    db.session.rollback()
    with pytest.raises(IntegrityError):  # not deferred: refused at once, as before
        bulk.insert_rows(IncidentRevision.__table__, [revision])
    db.session.rollback()
    assert count(IncidentRevision) == 0


def test_batch_cell_lookup_agrees_with_cell_at_on_shared_edges(app, world):
    cells = world["cells_a"]
    points = [IN_CELL_0, IN_CELL_1,
              (WEST + CELL, NORTH - CELL * 0.5),  # the edge between cells 0 and 1
              (WEST + CELL, NORTH - CELL),  # a vertex shared by four cells
              (WEST, NORTH),  # the block's corner
              (WEST - 0.01, NORTH)]  # outside every cell
    expected = [cell_at(lon, lat) for lon, lat in points]
    found = incidents.cells_at(points)
    assert [row.id if row else None for row in found] == [row.id if row else None for row in expected]
    assert found[2].id == cells[0].id  # the lowest code wins on an edge
    assert found[-1] is None
    assert [row.township_code for row in found[:-1]] == [row.township_code for row in expected[:-1]]


def test_failed_run_stores_nothing_and_the_retry_applies_everything(app, world, tmp_path, live_server, monkeypatch):
    client = PhoneClient(HttpTransport(live_server), str(tmp_path / "phone.sqlite"))
    client.register("worker", PASSWORD)
    for i in range(5):
        client.report("06010", f"report {i}", *IN_CELL_0)
    real = incidents.likely_duplicates

    def crash(*args, **kwargs):
        real(*args, **kwargs)
        raise RuntimeError("the server dies in the middle of a run")

    monkeypatch.setattr(incidents, "likely_duplicates", crash)
    try:
        with pytest.raises(SyncError) as failure:
            client.push()
        assert failure.value.status == 500
        assert count(Incident) == 0 and count(SyncReceipt) == 0 and len(client.outbox()) == 5
        monkeypatch.setattr(incidents, "likely_duplicates", real)
        assert client.push() == {"applied": 5}
        assert_exactly_once(client)
    finally:
        close_transport(client.transport)


def test_a_run_rolled_back_after_reserving_its_sync_seqs_answers_the_committed_ones(app, world, tmp_path,
                                                                                     monkeypatch):
    """applied_seq of a run comes from the seqs it reserved, unless the run lost a race after reserving them:
    then its items, applied one by one, tell the seqs their own commits gave."""
    client = phone(app, tmp_path, world["worker"])
    for i in range(3):
        client.report("06010", f"report {i}", *IN_CELL_0)
    real, calls = workflow.write_arrival_registrations, []

    def lose_a_race_once(cases):
        calls.append(cases)
        if len(calls) == 1:  # the run's last statement, after its sync_seqs were reserved
            raise IntegrityError("INSERT", {}, Exception("as if another request had committed first"))
        return real(cases)

    def after_another_commit(raw, ctx):  # the seqs the run had reserved go to someone else
        with db.engine.begin() as other:
            other.execute(text("UPDATE sync_counter SET seq = seq + 10 WHERE id = 1"))
        return apply_one(raw, ctx)

    apply_one = bulk.apply_in_own_transaction
    monkeypatch.setattr(workflow, "write_arrival_registrations", lose_a_race_once)
    monkeypatch.setattr(bulk, "apply_in_own_transaction", after_another_commit)
    assert client.push() == {"applied": 3}
    assert len(calls) == 1, "the items went one by one after the run rolled back"
    committed = {str(i): seq for i, seq in db.session.execute(select(Incident.id, Incident.sync_seq))}
    assert {r["incident_id"]: r["applied_seq"] for r in client.results().values()} == committed


def test_same_batch_twice_at_once_applies_each_create_once(app, world, tmp_path, live_server):
    """Two requests with the same batch of creates at once, round after round: each item once `applied`
    and once `duplicate` (the loser's run hits the winner's receipts and goes one by one), never two rows."""
    client = PhoneClient(HttpTransport(live_server), str(tmp_path / "phone.sqlite"))
    client.register("worker", PASSWORD)
    headers = {"Authorization": f"Bearer {client._meta('access_token')}", "Content-Type": "application/json"}
    links = [HttpTransport(live_server), HttpTransport(live_server)]
    rounds, size = 8, 10
    applied_seqs = {}
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            for round_ in range(rounds):
                for i in range(size):
                    client.report("06010", f"round {round_} report {i}", *(IN_CELL_0 if i % 2 else IN_CELL_1))
                answers = push_outbox_at_once(client, links, headers, pool)
                assert [a.status for a in answers] == [200, 200]
                for k in range(size):
                    pair = [a.body["results"][k] for a in answers]
                    assert sorted(r["status"] for r in pair) == ["applied", "duplicate"], pair
                    assert pair[0]["case_number"] == pair[1]["case_number"]
                    applied_seqs[pair[0]["incident_id"]] = {r["applied_seq"] for r in pair}
    finally:
        for link in [*links, client.transport]:
            close_transport(link)
    assert count(Incident) == rounds * size
    assert count(SyncReceipt) == rounds * size and count(IncidentRevision) == rounds * size
    numbers = db.session.scalars(select(Incident.case_number)).all()
    assert len(set(numbers)) == rounds * size
    assert db.session.scalar(select(func.count()).where(Incident.sync_seq.is_(None))) == 0
    # Winner and loser tell the committed sync_seq (not one the loser's rolled-back run had reserved).
    assert applied_seqs == {str(i): {seq} for i, seq in db.session.execute(select(Incident.id, Incident.sync_seq))}


def test_screen_leaves_items_after_an_earlier_use_of_their_ids_to_the_one_by_one_path(app, world, tmp_path):
    client = phone(app, tmp_path, world["worker"])
    a = client.report("06010", "a", *IN_CELL_0)
    client.edit(a, description="a, edited")
    client.report("06010", "b", *IN_CELL_1)
    mutations = client.outbox()
    twin = {**mutations[2], "mutation_id": str(uuid.uuid4()), "device_seq": 99}  # b's incident_id again
    plan = bulk.screen([*mutations, twin, mutations[0]], client_context(world))
    assert [c is not None for c in plan] == [True, False, True, False, False]


def client_context(world):
    from datetime import timedelta

    from gridapp.models import Device
    from sync.push import PushContext
    device = db.session.scalar(select(Device))
    return PushContext.of(world["worker"], device, clock_suspect=False, grace=timedelta(days=1),
                          unknown_incident_window=timedelta(days=1))


@pytest.mark.parametrize("bearing", [0, 45, 90, 135, 180, 270])
def test_duplicate_prefilter_keeps_every_report_within_the_distance(app, world, tmp_path, bearing):
    """The index prefilter box must not drop a report the exact (spheroid) distance keeps, in any direction."""
    import math
    client = phone(app, tmp_path, world["worker"])
    first = client.report("06010", "first", *IN_CELL_1)
    assert client.push() == {"applied": 1}
    around = []
    for metres in (44, 47, 49.5, 50.5, 53, 56):
        east, north = math.sin(math.radians(bearing)) * metres, math.cos(math.radians(bearing)) * metres
        around.append(client.report("06010", f"{metres} m", IN_CELL_1[0] + east * METRE, IN_CELL_1[1] + north * 0.9e-5))
    assert client.push() == {"applied": len(around)}
    # The reference: the nearest within 50 m (exact distance, no prefilter) among the first and earlier reports.
    distance = text("SELECT ST_Distance(a.location::geography, b.location::geography) FROM incidents a, incidents b "
                    "WHERE a.id = :a AND b.id = :b")
    stored = {str(i.id): i.likely_duplicate_of for i in db.session.scalars(select(Incident))}
    sides = set()
    for k, report in enumerate(around):
        candidates = [(db.session.scalar(distance, {"a": report, "b": other}), other) for other in [first, *around[:k]]]
        sides.add(candidates[0][0] <= 50)
        within = sorted(c for c in candidates if c[0] <= 50)
        assert str(stored[report]) == within[0][1] if within else stored[report] is None, (report, candidates)
    assert sides == {True, False}  # both sides of the threshold from the first
