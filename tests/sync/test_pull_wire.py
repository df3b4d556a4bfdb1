"""The pull page's wire format (docs/sync-protocol.md §5): PostgreSQL builds every change's JSON, and each kind
of change must read exactly as phones have always received it. The expected changes are built here from the
ORM, field by field and in the documented order, the way the server built them in Python before.
Pull pages carry no photos and no party fields (those reach dispatch only), so there is nothing to mask here."""
import gzip
import json
import random
import uuid
from datetime import UTC, datetime

import pytest
from psycopg import IsolationLevel
from sqlalchemy import event, func, select, text

from gridapp.api import GZIP_FAST_BYTES
from gridapp.extensions import db
from gridapp.models import Category, GridCell, Incident, IncidentNote, ScopeExit, User
from gridapp.services.categories import import_catalogue, parse_catalogue_csv
from gridapp.services.demo import DEFAULT_CATALOGUE
from gridapp.services.users import assign_cells
from sync import pull as sync_pull
from sync.pull import first_window, incidents_in_window
from tests.factories import make_user, make_world
from tests.sync.phones import phone
from tests.sync.test_scope_and_devices import RecordingTransport, dispatch_sets, location, point_in

CHANGES = "/api/v1/sync/changes"


@pytest.fixture
def world(app):
    world = make_world(cols=3, rows=2)
    import_catalogue(parse_catalogue_csv(DEFAULT_CATALOGUE.read_text(encoding="utf-8")))
    township_a = world["township_a"]
    world["worker"] = make_user("worker", "grid_worker", township_a, cells=world["cells_a"][:3])
    world["other_worker"] = make_user("other", "grid_worker", township_a, cells=world["cells_a"][3:])
    world["dispatcher"] = make_user("dispatcher", "dispatcher", township_a)
    db.session.commit()
    return world


def iso(value: datetime | None) -> str | None:
    """A time as phones get it: Python's isoformat in UTC (no fraction when it is zero)."""
    return value.astimezone(UTC).isoformat() if value is not None else None


def username(user_id: int | None) -> str | None:
    return db.session.get(User, user_id).username if user_id is not None else None


def expected_incident(incident_id: str) -> dict:
    incident = db.session.get(Incident, uuid.UUID(incident_id))
    head = {"entity": "incident", "op": "delete" if incident.voided_at else "upsert", "id": incident_id,
            "seq": incident.sync_seq, "version": incident.version}
    if incident.voided_at:
        return head
    lon, lat = db.session.execute(select(func.ST_X(Incident.location), func.ST_Y(Incident.location))
                                  .where(Incident.id == incident.id)).one()
    cell = db.session.get(GridCell, incident.cell_id) if incident.cell_id else None
    return {**head, "data": {
        "case_number": incident.case_number, "status": incident.status, "category": incident.category_code_raw,
        "description": incident.description, "location": incident.raw_location, "location_wgs84": [lon, lat],
        "gps_accuracy_m": incident.gps_accuracy_m, "cell_code": cell.code if cell else None,
        "is_outside_grid": incident.is_outside_grid, "priority": incident.priority,
        "assigned_squad": incident.assigned_squad_id, "reporter": username(incident.reporter_id),
        "created_at_device": iso(incident.created_at_device), "received_at": iso(incident.received_at),
        "updated_at": iso(incident.updated_at), "due_at": iso(incident.due_at),
        "task_user": username(incident.task_user_id)}}


def expected_note(note_id: str) -> dict:
    note = db.session.get(IncidentNote, uuid.UUID(note_id))
    return {"entity": "note", "op": "upsert", "id": note_id, "seq": note.sync_seq, "data": {
        "incident_id": str(note.incident_id), "text": note.text, "author": username(note.author_id),
        "created_at_device": iso(note.created_at_device), "created_at": iso(note.created_at)}}


def expected_category(category_id: str) -> dict:
    category = db.session.get(Category, int(category_id))
    return {"entity": "category", "op": "upsert" if category.is_active else "delete", "id": category_id,
            "seq": category.sync_seq, "data": {
                "standard": category.standard, "kind": category.kind, "code": category.code, "name": category.name,
                "major_code": category.major_code, "major_name": category.major_name,
                "conditions": [{"register_condition": c.register_condition, "close_condition": c.close_condition,
                                "time_limit": c.time_limit, "time_unit": c.time_unit} for c in category.conditions]}}


EXPECTED = {"incident": expected_incident, "note": expected_note, "category": expected_category}


def assert_as_expected(change: dict) -> None:
    """Equal values, and the keys in the documented order (a phone may read the JSON as a stream)."""
    expected = EXPECTED[change["entity"]](change["id"])
    assert change == expected
    assert list(change) == list(expected)
    if "data" in expected:
        assert list(change["data"]) == list(expected["data"])


def test_every_kind_of_change_reads_as_the_phone_expects(app, world, tmp_path):
    worker, other, dispatcher = world["worker"], world["other_worker"], world["dispatcher"]
    reporter = phone(app, tmp_path, other, name="reporter")
    created = reporter.report("06010", "新建：暴露垃圾 \"quoted\" \\ back\nslash", *point_in(0))
    edited = reporter.report("06010", "to be edited", *point_in(1))
    voided = reporter.report("06010", "to be voided", *point_in(2))
    moved = reporter.report("06010", "to be moved out", *point_in(0))
    dispatched = reporter.report("06011", "dispatch works on it", *point_in(1))
    later = reporter.report("06010", "in cell 3: backfilled after the reassignment", *point_in(3))
    note = reporter.add_note(created, "第一条备注")
    reporter.add_note(later, "a note on the backfilled incident")
    reporter.push()
    client = phone(app, tmp_path, worker, name="worker")
    own = client.report("01001", "my own report, outside my cells", *point_in(5))
    client.push()
    reporter.pull()
    reporter.edit(edited, description="edited on the phone")
    reporter.push()

    dispatch_sets(dispatched, dispatcher, status="registered", priority=2)
    incident = db.session.get(Incident, uuid.UUID(dispatched))
    # Dispatch-side fields the workflow sets: a task for the worker and a deadline (exact second: no fraction).
    incident.task_user_id, incident.due_at = worker.id, datetime.fromisoformat("2026-11-23T09:30:00+08:00")
    incident.created_at_device = datetime.fromisoformat("2026-11-20T07:13:22+08:00")
    db.session.get(Incident, uuid.UUID(voided)).voided_at = datetime.now(UTC)
    db.session.get(Incident, uuid.UUID(voided)).version += 1
    db.session.scalars(select(Category).where(Category.code == "06011")).first().is_active = False
    db.session.commit()
    dispatch_sets(moved, dispatcher, location=location(4))

    client.transport = recorder = RecordingTransport(app)
    client.pull(limit=7)
    changes = [c for page in recorder.pages for c in page["changes"]]
    assert {(c["entity"], c["op"]) for c in changes} == {
        ("incident", "upsert"), ("incident", "delete"), ("incident", "evict"), ("note", "upsert"),
        ("category", "upsert"), ("category", "delete")}
    for change in changes:
        if change["op"] == "evict":  # `moved` left the worker's cells after the cursor (from a sync_scope_exits row)
            exit_seq = db.session.scalar(select(ScopeExit.sync_seq).where(ScopeExit.incident_id == uuid.UUID(moved)))
            assert change == {"entity": "incident", "op": "evict", "id": moved, "seq": exit_seq,
                              "reason": "moved_out_of_scope"}
            assert list(change) == ["entity", "op", "id", "seq", "reason"]
        else:
            assert_as_expected(change)
    by_id = {c["id"]: c for c in changes if c["op"] != "evict"}
    assert set(by_id) >= {created, edited, voided, dispatched, own, note}
    assert by_id[voided]["op"] == "delete"
    assert by_id[edited]["data"]["description"] == "edited on the phone" and by_id[edited]["version"] == 2
    assert by_id[created]["data"]["description"] == "新建：暴露垃圾 \"quoted\" \\ back\nslash"
    assert by_id[dispatched]["data"]["task_user"] == "worker"
    assert by_id[dispatched]["data"]["due_at"] == "2026-11-23T01:30:00+00:00"
    assert by_id[dispatched]["data"]["created_at_device"] == "2026-11-19T23:13:22+00:00"
    assert by_id[created]["data"]["location"] == {"crs": "wgs84", "lat": point_in(0)[1], "lon": point_in(0)[0]}
    assert by_id[own]["data"]["cell_code"] == world["cells_a"][5].code

    # Reassignment: cell 0-2 lost (evictions without seq), cells 3-5 gained (backfill: upserts and their notes).
    assign_cells(worker, world["cells_a"][3:])
    db.session.commit()
    recorder.pages.clear()
    client.pull(limit=2)
    changes = [c for page in recorder.pages for c in page["changes"]]
    evictions = [c for c in changes if c["op"] == "evict"]
    assert sorted(c["id"] for c in evictions) == sorted([created, edited, voided, dispatched])
    assert all(c == {"entity": "incident", "op": "evict", "id": c["id"], "reason": "cell_removed"} for c in evictions)
    backfilled = [c for c in changes if c["op"] != "evict"]
    assert {c["id"] for c in backfilled if c["entity"] == "incident"} == {later, moved, own}
    assert [c["data"]["text"] for c in backfilled if c["entity"] == "note"] == ["a note on the backfilled incident"]
    for change in backfilled:
        assert_as_expected(change)


def test_the_page_envelope_is_unchanged(app, world, tmp_path):
    """The raw body: the envelope's fields and formats around the spliced changes, gzipped for phones."""
    client = phone(app, tmp_path, world["worker"], name="worker")
    client.report("06010", "one", *point_in(0))
    client.push()
    token = client._meta("access_token")
    response = app.test_client().get(CHANGES, query_string={"limit": 3},
                                      headers={"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"})
    assert response.status_code == 200 and response.mimetype == "application/json"
    body = json.loads(gzip.decompress(response.data) if response.headers.get("Content-Encoding") == "gzip"
                      else response.data)
    assert list(body) == ["changes", "next_cursor", "has_more", "high_water_seq", "rescope", "scope", "server_time"]
    assert len(body["changes"]) == 3 and body["has_more"] is True and body["rescope"] is None
    assert body["scope"] == {"epoch": world["worker"].scope_epoch, "cells": sorted(c.code for c in world["cells_a"][:3])}
    assert datetime.fromisoformat(body["server_time"]).utcoffset().total_seconds() == 0
    for change in body["changes"]:
        assert_as_expected(change)


@pytest.mark.parametrize("seed", range(20))
def test_any_first_window_gives_exactly_the_first_rows_after_the_cursor(seed):
    """incidents_in_window, with or without a cursor's window hint (any width, from 1 to past the high water),
    returns what an unwindowed scan would: the first limit + 1 rows after the cursor, in order."""
    rng = random.Random(seed)
    hw = rng.randint(50, 5000)
    seqs = sorted(rng.sample(range(1, hw + 1), rng.randint(0, min(hw, 300))))  # a scope's share: dense or sparse
    seq, limit = rng.randint(0, hw), rng.choice([1, 3, 10, 50])
    windows = []

    def fetch(until):
        windows.append(until)
        return [s for s in seqs if seq < s <= until][:limit + 1]
    for hint in (None, 1, rng.randint(1, hw), hw * 10):
        windows.clear()
        rows = incidents_in_window(fetch, seq, limit, hw, hint)
        assert rows == [s for s in seqs if s > seq][:limit + 1]
        assert windows == sorted(windows) and windows[-1] <= hw


def test_a_first_page_window_is_guessed_from_the_scopes_share_of_the_cells():
    """Without a cursor's hint the window is sized to hold about 1.5 pages if changes were spread evenly over
    the cells (the benchmark's worker: 400 of 10,000 cells), never under 1.5 pages (a scope of every cell), and
    INCREMENTAL_WINDOW_FACTOR pages when the figures are missing (no cells, a never-analysed table)."""
    from sync import pull
    assert first_window(500, 400, 10_000) == 18_750
    assert first_window(500, 10_000, 9_000) == 750
    assert first_window(500, 0, 10_000) == first_window(500, 400, -1) == 500 * pull.INCREMENTAL_WINDOW_FACTOR


def test_a_large_page_is_gzipped_fast_and_a_small_one_as_before(app, world, tmp_path):
    """Bodies over GZIP_FAST_BYTES (full pages) at level 1, smaller ones at level 5: the gzip header's XFL byte
    says 4 (fastest) or 0; both inflate to the same JSON a phone would get without gzip."""
    client = phone(app, tmp_path, world["worker"], name="worker")
    for i in range(20):
        client.report("06010", f"{i} " + "长描述" * 600, *point_in(0))
    client.push()
    headers = {"Authorization": f"Bearer {client._meta('access_token')}"}
    for limit, level_flag in ((500, 4), (3, 0)):
        plain = app.test_client().get(CHANGES, query_string={"limit": limit}, headers=headers)
        zipped = app.test_client().get(CHANGES, query_string={"limit": limit},
                                       headers={**headers, "Accept-Encoding": "gzip"})
        assert "Content-Encoding" not in plain.headers and zipped.headers["Content-Encoding"] == "gzip"
        assert (len(plain.data) > GZIP_FAST_BYTES) == (limit == 500)
        assert zipped.data[8] == level_flag
        unzipped, expected = json.loads(gzip.decompress(zipped.data)), plain.get_json()
        assert unzipped["changes"] == expected["changes"] and unzipped["next_cursor"] == expected["next_cursor"]


def test_a_page_is_one_repeatable_read_transaction_from_authentication_on(app, world, tmp_path):
    """The pull view starts the snapshot before authentication (psycopg opens the request's transaction with
    BEGIN ISOLATION LEVEL REPEATABLE READ): every statement of a page, the token's included, runs in that one
    transaction, with no COMMIT before the page's end and no ORM re-reading of device or user. A statement
    count, not a timing: a full page runs principal, context, scan, other streams, JSON, and the ack."""
    reporter = phone(app, tmp_path, world["other_worker"], name="reporter")
    for i in range(4):
        reporter.report("06010", f"report {i}", *point_in(i % 3))
    reporter.push()
    client = phone(app, tmp_path, world["worker"], name="worker")
    client.pull(limit=2)  # a cursor, so that the next page acknowledges something
    cursor, token = client._meta("cursor"), client._meta("access_token")
    reporter.report("06010", "one more", *point_in(0))
    reporter.push()
    db.session.remove()  # as a request in production starts: no transaction of the test's (app context shared)
    seen, commits = [], []

    def statement(conn, cursor_, sql, params, context, executemany):
        seen.append((" ".join(sql.split())[:40], conn.connection.dbapi_connection.isolation_level))

    def commit(conn):
        commits.append(conn)

    event.listen(db.engine, "before_cursor_execute", statement)
    event.listen(db.engine, "commit", commit)
    try:
        response = app.test_client().get(CHANGES, query_string={"cursor": cursor, "limit": 500},
                                          headers={"Authorization": f"Bearer {token}"})
    finally:
        event.remove(db.engine, "before_cursor_execute", statement)
        event.remove(db.engine, "commit", commit)
    assert response.status_code == 200 and len(response.get_json()["changes"]) == 1
    assert seen[0][0].startswith("SELECT api_tokens.id"), "the token is read first, in the snapshot"
    assert {level for _, level in seen} == {IsolationLevel.REPEATABLE_READ}
    assert [sql.split()[0] for sql, _ in seen] == ["SELECT", "SELECT", "UPDATE", "SELECT", "(", "WITH"], seen
    assert len(commits) == 1, "one transaction: the page's end"
    # The pooled connection goes back at the default level: the next transaction on it is not a snapshot.
    assert db.session.execute(text("SHOW transaction_isolation")).scalar() == "read committed"


def test_a_row_changed_while_the_page_is_built_comes_as_the_snapshot_saw_it(app, world, tmp_path, monkeypatch):
    """The page's incidents are fetched by the row addresses the scan found: a row another transaction
    changes (and commits) between the scan and the JSON comes as of the page's snapshot, and its new version
    comes with the next page (its new sync_seq is after the cursor)."""
    reporter = phone(app, tmp_path, world["other_worker"], name="reporter")
    incident_id = reporter.report("06010", "as reported", *point_in(0))
    reporter.push()
    client = phone(app, tmp_path, world["worker"], name="worker")
    scan = sync_pull.incidents_in_window

    def scan_then_edit_elsewhere(*args, **kwargs):
        rows = scan(*args, **kwargs)
        with db.engine.connect() as other:  # another connection: its own transaction, committed now
            other.execute(text("UPDATE incidents SET description = 'edited meanwhile', version = version + 1 "
                               "WHERE id = :id"), {"id": incident_id})
            other.commit()
        return rows

    monkeypatch.setattr(sync_pull, "incidents_in_window", scan_then_edit_elsewhere)
    client.pull()
    assert client.incidents()[incident_id] == {"version": 1, "data": {
        **client.incidents()[incident_id]["data"], "description": "as reported"}}
    monkeypatch.setattr(sync_pull, "incidents_in_window", scan)
    client.pull()
    assert client.incidents()[incident_id]["version"] == 2
    assert client.incidents()[incident_id]["data"]["description"] == "edited meanwhile"
