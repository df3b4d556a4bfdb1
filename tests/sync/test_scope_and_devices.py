"""Scope changes, leakage and the device lifecycle (SYNC.md §5.5 "Scope change", §5.8, §5.9).

Phones are the reference client over the app in-process (tests/sync/phones.py); refusals are checked
for their status, their error code, and for leaving everything stored as it was.
"""
import uuid

import pytest
from sqlalchemy import func, select, text

from gridapp.extensions import db
from gridapp.models import (
    ApiToken,
    AuditEvent,
    Device,
    DeviceRefreshToken,
    Incident,
    IncidentNote,
    IncidentRevision,
    QuarantineItem,
    SyncReceipt,
)
from gridapp.services import incidents
from gridapp.services.users import assign_cells
from sync import protocol as p
from sync.client import SyncError, WsgiTransport
from sync.pull import server_buckets
from tests.factories import CELL, ORIGIN_A, ORIGIN_B, PASSWORD, make_user, make_world, token_for
from tests.sync.phones import assert_exactly_once, phone

CHANGES, MUTATIONS, VERIFY = "/api/v1/sync/changes", "/api/v1/sync/mutations", "/api/v1/sync/verify"


def point_in(index: int, township: str = "a") -> tuple[float, float]:
    """A point inside cell number `index` of a township (cells run west to east, then north to south)."""
    west, north = ORIGIN_A if township == "a" else ORIGIN_B
    return west + CELL * (index % 3 + 0.5), north - CELL * (index // 3 + 0.5)


def location(index: int, township: str = "a") -> dict:
    lon, lat = point_in(index, township)
    return {"lon": lon, "lat": lat, "crs": "wgs84"}


def count(model, *where) -> int:
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def stored() -> dict:
    """Everything a sync call could change: row counts, and each device's state, reason and acknowledged seq."""
    db.session.expire_all()
    counts = {model.__name__: count(model) for model in (
        Incident, IncidentNote, IncidentRevision, SyncReceipt, QuarantineItem, AuditEvent, ApiToken,
        DeviceRefreshToken, Device)}
    devices = {str(d.id): (d.state, d.state_reason, d.last_ack_seq)
               for d in db.session.scalars(select(Device).order_by(Device.id))}
    used = count(DeviceRefreshToken, DeviceRefreshToken.used_at.is_not(None))
    revoked = count(ApiToken, ApiToken.revoked_at.is_not(None))
    return {**counts, "devices": devices, "used_refresh": used, "revoked_access": revoked}


def local_versions(client) -> dict[str, int]:
    return {incident_id: record["version"] for incident_id, record in client.incidents().items()}


def server_versions(user) -> dict[str, int]:
    db.session.expire_all()
    return {incident_id: version for pairs in server_buckets(user).values() for incident_id, version in pairs}


def problem_of(response) -> tuple[int, str | None]:
    body = response.get_json(silent=True) or {}
    return response.status_code, body.get("code")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


class RecordingTransport(WsgiTransport):
    """The in-process transport, keeping every pull page."""

    def __init__(self, app):
        super().__init__(app)
        self.pages = []

    def __call__(self, method, path, headers, body):
        response = super().__call__(method, path, headers, body)
        if path.startswith(CHANGES) and response.status == 200:
            self.pages.append(response.body)
        return response


def recording_phone(app, tmp_path, user, name) -> tuple:
    client = phone(app, tmp_path, user, name=name)
    client.transport = recorder = RecordingTransport(app)
    return client, recorder


def dispatch_sets(incident_id: str, actor, **values) -> None:
    incident = incidents.lock_incident(uuid.UUID(incident_id))
    incidents.change_fields(incident, values, actor=actor, source="dispatch", mutation_id=None)
    db.session.commit()


@pytest.fixture
def world(app):
    world = make_world(cols=3, rows=2)
    township_a = world["township_a"]
    world["worker"] = make_user("worker", "grid_worker", township_a, cells=world["cells_a"][:3])
    world["other_worker"] = make_user("other", "grid_worker", township_a, cells=world["cells_a"][3:])
    world["roamer"] = make_user("roamer", "grid_worker", township_a)  # reports anywhere, holds no cells
    world["b_worker"] = make_user("bworker", "grid_worker", world["township_b"], cells=world["cells_b"][:3])
    world["dispatcher"] = make_user("dispatcher", "dispatcher", township_a)
    world["chief"] = make_user("chief", "duty_chief", township_a)
    db.session.commit()
    return world


def codes(cells) -> list[str]:
    return sorted(c.code for c in cells)


# --- scope changes ---------------------------------------------------------------------------------------
def test_reassignment_rescopes_evicts_backfills_and_keeps_pending_work(app, world, tmp_path):
    """§5.5 scope change: cells A (0-2) → B (3-5) gives `rescope`, evicts A's incidents (not the worker's own), backfills
    B's incidents committed before the cursor, and accepts the edit queued before the reassignment (grace)."""
    worker, other = world["worker"], world["other_worker"]
    reporter = phone(app, tmp_path, other, name="reporter")
    in_a = reporter.report("06010", "in A, by another worker", *point_in(0))
    b_old = reporter.report("06010", "in B, before the cursor", *point_in(3))
    reporter.add_note(b_old, "a note on the old B incident")
    client, recorder = recording_phone(app, tmp_path, worker, "worker")
    own_in_a = client.report("06010", "in A, my own", *point_in(1))
    reporter.push()
    client.sync()
    assert set(client.incidents()) == {in_a, own_in_a}
    cursor_before = p.decode_cursor(client._meta("cursor"), app.config["SECRET_KEY"].encode())
    b_new = reporter.report("06010", "in B, after the cursor", *point_in(4))
    reporter.push()
    client.edit(in_a, description="edited offline while still in A")

    assign_cells(worker, world["cells_a"][3:])
    db.session.commit()
    assert client.push() == {"applied": 1}, "pending work on lost cells is accepted within the grace period"
    assert db.session.get(Incident, uuid.UUID(in_a)).description == "edited offline while still in A"

    recorder.pages.clear()
    client.pull()
    first = recorder.pages[0]
    assert first["rescope"] == {"epoch": worker.scope_epoch, "cells_removed": codes(world["cells_a"][:3]),
                                "cells_added": codes(world["cells_a"][3:])}
    changes = [c for page in recorder.pages for c in page["changes"] if c["entity"] != "category"]
    evictions = [c for c in changes if c["op"] == "evict"]
    assert [(c["id"], c["reason"]) for c in evictions] == [(in_a, "cell_removed")], "never the worker's own"
    upserts = {c["id"]: c for c in changes if c["entity"] == "incident" and c["op"] == "upsert"}
    assert set(upserts) == {b_old, b_new}
    assert upserts[b_old]["seq"] <= cursor_before["s"], "b_old came from the backfill, not the incremental stream"
    assert [c["data"]["text"] for c in changes if c["entity"] == "note"] == ["a note on the old B incident"]
    assert set(client.incidents()) == {own_in_a, b_old, b_new}
    assert local_versions(client) == server_versions(worker)
    assert client._meta("scope") == {"epoch": worker.scope_epoch, "cells": codes(world["cells_a"][3:])}
    assert client.verify(repair=False)["status"] == "ok"
    assert_exactly_once(client)


def test_gained_incident_changed_after_the_cursor_arrives_with_its_earlier_notes(app, world, tmp_path):
    """§5.5 backfill: an incident of a gained cell that changed after the cursor comes through the incremental
    stream; the notes it had before the cursor must come too (found by the seeded simulation)."""
    reporter = phone(app, tmp_path, world["other_worker"], name="reporter")
    incident_id = reporter.report("06010", "in B", *point_in(3))
    reporter.add_note(incident_id, "written long ago")
    reporter.push()
    client = phone(app, tmp_path, world["worker"])
    client.pull()
    dispatch_sets(incident_id, world["dispatcher"], status="registered")  # after the worker's cursor
    assign_cells(world["worker"], world["cells_a"][3:])
    db.session.commit()
    client.pull()
    assert local_versions(client) == {incident_id: 2} == server_versions(world["worker"])
    assert [n["text"] for n in client.notes().values()] == ["written long ago"]


def test_incident_that_left_a_lost_cell_after_the_cursor_is_evicted_at_rescope(app, world, tmp_path):
    """§5.5 rescope: an incident that moved out of a cell the worker then lost, to a cell they do not get, is
    evicted too, not kept forever (found by the seeded simulation)."""
    roamer = phone(app, tmp_path, world["roamer"], name="roamer")
    moved = roamer.report("06010", "in A", *point_in(0))
    roamer.push()
    client = phone(app, tmp_path, world["worker"])
    client.pull()
    assert set(client.incidents()) == {moved}
    dispatch_sets(moved, world["dispatcher"], location=location(5))  # out of cell 0, after the cursor
    assign_cells(world["worker"], world["cells_a"][3:5])  # loses cells 0-2, does not get cell 5
    db.session.commit()
    client.pull()
    assert client.incidents() == {} == server_versions(world["worker"])
    assert client.verify(repair=False)["status"] == "ok"


class StopAfterPages(WsgiTransport):
    """The in-process transport, cut (the app is killed) after a number of pull pages."""

    def __init__(self, app, pages):
        super().__init__(app)
        self.pages_left = pages

    def __call__(self, method, path, headers, body):
        if path.startswith(CHANGES):
            if self.pages_left == 0:
                raise ConnectionAbortedError("the app was killed")
            self.pages_left -= 1
        return super().__call__(method, path, headers, body)


def test_reassignment_in_the_middle_of_a_backfill_still_backfills_every_gained_cell(app, world, tmp_path):
    """§5.5 rescope: a second reassignment while the first backfill is half done does not drop the rest of it."""
    reporter = phone(app, tmp_path, world["other_worker"], name="reporter")
    for n in range(6):
        reporter.report("06010", f"B incident {n}", *point_in(3 + n % 2))
    reporter.report("06010", "in the cell gained second", *point_in(5))
    reporter.push()
    client = phone(app, tmp_path, world["worker"])
    client.pull()
    assign_cells(world["worker"], world["cells_a"][3:5])
    db.session.commit()
    client.transport = StopAfterPages(app, pages=1)
    with pytest.raises(ConnectionAbortedError):
        client.pull(limit=2)  # the rescope page and the first 2 of 6 backfilled incidents, then the app dies
    assert len(client.incidents()) == 2
    assign_cells(world["worker"], world["cells_a"][3:6])
    db.session.commit()
    client.transport = WsgiTransport(app)
    client.pull(limit=2)
    assert local_versions(client) == server_versions(world["worker"])
    assert len(client.incidents()) == 7
    assert client.verify(repair=False)["status"] == "ok"


def test_pending_edit_on_a_lost_cell_after_the_grace_period_is_quarantined(app, world, tmp_path, monkeypatch):
    """§5.4 step 3: past the grace window an edit on a lost cell is quarantined as `out_of_scope`, not applied or dropped."""
    worker = world["worker"]
    reporter = phone(app, tmp_path, world["other_worker"], name="reporter")
    in_a = reporter.report("06010", "in A", *point_in(0))
    reporter.push()
    client = phone(app, tmp_path, worker)
    client.pull()
    client.edit(in_a, description="too late")
    assign_cells(worker, world["cells_a"][3:])
    db.session.commit()
    monkeypatch.setitem(app.config, "SYNC_SCOPE_GRACE_DAYS", 0)
    assert client.push() == {"quarantined": 1}
    result = next(iter(client.results().values()))
    assert result["code"] == p.OUT_OF_SCOPE
    assert db.session.get(Incident, uuid.UUID(in_a)).description == "in A" and count(IncidentRevision) == 1
    item = db.session.scalar(select(QuarantineItem))
    assert item.payload["changes"]["description"]["to"] == "too late" and item.incident_id == uuid.UUID(in_a)
    assert_exactly_once(client)


def test_incident_moved_by_dispatch_is_evicted_and_appears_on_the_new_cells_phone(app, world, tmp_path):
    """§5.5 evictions: dispatch moves an incident from worker 1's cell to worker 2's: phone 1 evicts it
    (and its notes), phone 2 receives it with its earlier notes."""
    roamer = phone(app, tmp_path, world["roamer"], name="roamer")
    moved = roamer.report("06010", "to be moved", *point_in(0))
    roamer.add_note(moved, "written before the move")
    stays = roamer.report("06010", "stays", *point_in(1))
    roamer.push()
    first = phone(app, tmp_path, world["worker"], name="first")
    second = phone(app, tmp_path, world["other_worker"], name="second")
    first.pull()
    second.pull()
    assert set(first.incidents()) == {moved, stays} and len(first.notes()) == 1
    assert second.incidents() == {}

    dispatch_sets(moved, world["dispatcher"], location=location(4))
    first.transport = first_pages = RecordingTransport(app)
    first.pull()
    evictions = [c for page in first_pages.pages for c in page["changes"] if c["op"] == "evict"]
    assert [(c["id"], c["reason"]) for c in evictions] == [(moved, "moved_out_of_scope")]
    assert set(first.incidents()) == {stays} and first.notes() == {}
    second.pull()
    assert set(second.incidents()) == {moved}
    assert second.incidents()[moved]["data"]["cell_code"] == world["cells_a"][4].code
    assert second.incidents()[moved]["version"] == 2
    assert [n["text"] for n in second.notes().values()] == ["written before the move"]
    for client, user in ((first, world["worker"]), (second, world["other_worker"])):
        assert local_versions(client) == server_versions(user)
        assert client.verify(repair=False)["status"] == "ok"


def test_a_full_pull_never_leaks_other_cells_or_townships(app, world, tmp_path):
    """Leakage: every change of a full pull is in the worker's cells, reported by them, or a note of such an incident."""
    worker = world["worker"]
    reporters = {name: phone(app, tmp_path, world[name], name=name)
                 for name in ("worker", "other_worker", "roamer", "b_worker")}
    for name, client in reporters.items():
        township = "b" if name == "b_worker" else "a"
        for cell in range(6):
            incident_id = client.report("06010", f"{name} in {township}{cell}", *point_in(cell, township))
            client.add_note(incident_id, f"note by {name}")
        if township == "a":
            client.report("06010", f"{name} outside every cell", ORIGIN_A[0] - 0.05, ORIGIN_A[1])
        client.push()
    mine = {c.code for c in world["cells_a"][:3]}

    client, recorder = recording_phone(app, tmp_path, worker, "leak-check")
    client.pull(limit=7)
    allowed = set()
    for change in (c for page in recorder.pages for c in page["changes"] if c["entity"] == "incident"):
        assert change["op"] == "upsert"
        data = change["data"]
        assert data["cell_code"] in mine or data["reporter"] == "worker", data
        allowed.add(change["id"])
    notes = [c for page in recorder.pages for c in page["changes"] if c["entity"] == "note"]
    assert notes and all(c["data"]["incident_id"] in allowed for c in notes)
    # 3 cells x 4 reporters in township A, plus the worker's own 3 other cells and own outside-grid report.
    assert len(allowed) == 3 * 3 + 3 + 1
    assert local_versions(client) == server_versions(worker)
    assert client.verify(repair=False)["status"] == "ok"

    b_client, b_recorder = recording_phone(app, tmp_path, world["b_worker"], "b-leak-check")
    b_client.pull()
    b_cells = {c.code for c in world["cells_b"][:3]}
    b_changes = [c for page in b_recorder.pages for c in page["changes"] if c["entity"] == "incident"]
    assert b_changes and all(c["data"]["cell_code"] in b_cells or c["data"]["reporter"] == "bworker"
                             for c in b_changes)
    assert not any(c["data"]["cell_code"].startswith(world["township_a"].code) for c in b_changes
                   if c["data"]["cell_code"])


# --- cursors -----------------------------------------------------------------------------------------------
def test_forged_and_foreign_cursors_are_refused(app, world, tmp_path, client):
    """§5.5: a cursor with a bad signature, signed with another key, garbled, or another device's → 400 `sync.cursor_invalid`."""
    reporter = phone(app, tmp_path, world["other_worker"], name="reporter")
    reporter.report("06010", "x", *point_in(0))
    reporter.push()
    mine = phone(app, tmp_path, world["worker"], name="mine")
    theirs = phone(app, tmp_path, world["worker"], name="theirs")  # a second install of the same worker
    mine.pull()
    theirs.pull()
    cursor = mine._meta("cursor")
    payload, signature = cursor.split(".")
    key = app.config["SECRET_KEY"].encode()
    state = p.decode_cursor(cursor, key)
    further = p.encode_cursor({**state, "s": state["s"] + 10_000}, key).split(".")[0]
    forged = {
        "flipped signature": payload + "." + ("A" if signature[0] != "A" else "B") + signature[1:],
        "edited payload, old signature": further + "." + signature,
        "another key": p.encode_cursor({**state, "s": 0}, b"not-the-server-key"),
        "garbage": "not-a-cursor",
        "another device's": theirs._meta("cursor"),
    }
    headers = bearer(mine._meta("access_token"))
    before = stored()
    for name, bad in forged.items():
        pulled = client.get(CHANGES, query_string={"cursor": bad}, headers=headers)
        assert problem_of(pulled) == (400, "sync.cursor_invalid"), name
        verified = client.post(VERIFY, json={"cursor": bad, "buckets": {}}, headers=headers)
        assert problem_of(verified) == (400, "sync.cursor_invalid"), name
    assert stored() == before, "a refused cursor acknowledges nothing"
    assert mine.pull() == 1, "the phone's own cursor still works"


# --- device lifecycle ----------------------------------------------------------------------------------------
def set_state(client, chief_headers, device_id, state, reason="lost on patrol"):
    return client.post(f"/api/v1/devices/{device_id}/state", json={"state": state, "reason": reason},
                       headers=chief_headers)


def test_draining_device_may_push_but_not_pull(app, world, tmp_path, client):
    """§5.8 draining: pushes are still accepted; pulls get 403 `sync.device_draining` with wipe_after_drain."""
    phone_ = phone(app, tmp_path, world["worker"])
    phone_.pull()
    chief = token_for(world["chief"])
    assert set_state(client, chief, phone_.device_id, "draining", "leaves the team").status_code == 204
    incident_id = phone_.report("06010", "pending when the worker left", *point_in(0))
    assert phone_.push() == {"applied": 1}
    assert db.session.get(Incident, uuid.UUID(incident_id)) is not None
    before = stored()
    response = client.get(CHANGES, query_string={"cursor": phone_._meta("cursor")},
                          headers=bearer(phone_._meta("access_token")))
    assert problem_of(response) == (403, "sync.device_draining")
    assert response.get_json()["details"]["wipe_after_drain"] is True
    with pytest.raises(SyncError) as refused:
        phone_.pull()
    assert (refused.value.status, refused.value.problem["code"]) == (403, "sync.device_draining")
    assert stored() == before
    assert_exactly_once(phone_)


def test_revoked_device_is_refused_everywhere_and_the_phone_wipes(app, world, tmp_path, client):
    """§5.8 revoked (by a duty chief, with a reason, audited): every call is 403 `sync.device_revoked`, the phone
    wipes its data, and the refusals change nothing stored."""
    reporter = phone(app, tmp_path, world["other_worker"], name="reporter")
    reporter.report("06010", "seen by the phone", *point_in(0))
    reporter.push()
    phone_ = phone(app, tmp_path, world["worker"])
    phone_.sync()
    assert phone_.incidents()
    access, refresh, cursor = (phone_._meta(k) for k in ("access_token", "refresh_token", "cursor"))
    chief = token_for(world["chief"])

    dispatcher = token_for(world["dispatcher"])
    assert problem_of(set_state(client, dispatcher, phone_.device_id, "revoked")) == (403, "auth.forbidden")
    assert db.session.get(Device, uuid.UUID(phone_.device_id)).state == "active"
    assert set_state(client, chief, phone_.device_id, "revoked", "phone stolen").status_code == 204
    db.session.expire_all()
    device = db.session.get(Device, uuid.UUID(phone_.device_id))
    assert (device.state, device.state_reason) == ("revoked", "phone stolen")
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "device.set_state"))
    assert (event.actor_id, event.object_id, event.reason, event.details) == (
        world["chief"].id, phone_.device_id, "phone stolen", {"from": "active", "to": "revoked"})

    before = stored()
    push_body = {"protocol_version": p.PROTOCOL_VERSION, "mutations": [{
        "mutation_id": str(uuid.uuid4()), "device_seq": 99, "type": "incident.create", "incident_id": str(uuid.uuid4()),
        "data": {"category": "06010", "description": "after revocation", "location": location(0)}}]}
    calls = {
        "push": client.post(MUTATIONS, json=push_body, headers=bearer(access)),
        "pull": client.get(CHANGES, query_string={"cursor": cursor}, headers=bearer(access)),
        "verify": client.post(VERIFY, json={"cursor": cursor, "buckets": {}}, headers=bearer(access)),
        "config": client.get("/api/v1/sync/config", headers=bearer(access)),
        "refresh": client.post("/api/v1/devices/token", json={"refresh_token": refresh}),
        "register again": client.post("/api/v1/devices/register", json={
            "username": "worker", "password": PASSWORD, "install_id": phone_._meta("install_id")}),
    }
    for name, response in calls.items():
        assert problem_of(response) == (403, "sync.device_revoked"), (name, response.get_json())
    assert stored() == before, "refusing a revoked device writes nothing (not even another audit event)"

    phone_.report("06010", "queued on the stolen phone", *point_in(0))
    with pytest.raises(SyncError) as refused:
        phone_.sync()
    assert (refused.value.status, refused.value.problem["code"]) == (403, "sync.device_revoked")
    assert phone_.incidents() == {} and phone_.notes() == {}
    assert all(phone_._meta(k) is None for k in ("access_token", "refresh_token", "cursor", "scope"))
    assert stored() == before


def test_a_push_is_refused_at_once_after_its_user_is_disabled_or_its_device_revoked(app, world, tmp_path, client):
    """The push reads who pushes with the token, fresh on every request: no state of an earlier request lets
    a disabled user or a revoked device (even one whose tokens were left alive) push again."""
    phone_ = phone(app, tmp_path, world["worker"])
    phone_.report("06010", "before", *point_in(0))
    assert phone_.push() == {"applied": 1}
    access = phone_._meta("access_token")

    def push_one():
        return client.post(MUTATIONS, headers=bearer(access), json={
            "protocol_version": p.PROTOCOL_VERSION, "mutations": [{
                "mutation_id": str(uuid.uuid4()), "device_seq": 99, "type": "incident.create",
                "incident_id": str(uuid.uuid4()),
                "data": {"category": "06010", "description": "refused", "location": location(0)}}]})

    before = stored()
    world["worker"].is_active = False
    db.session.commit()
    assert problem_of(push_one()) == (401, "auth.required")
    world["worker"].is_active = True
    db.session.get(Device, uuid.UUID(phone_.device_id)).state = "revoked"  # its tokens untouched
    db.session.commit()
    assert problem_of(push_one()) == (403, "sync.device_revoked")
    db.session.get(Device, uuid.UUID(phone_.device_id)).state = "active"
    db.session.commit()
    assert stored() == before, "the refused pushes wrote nothing"
    assert push_one().get_json()["results"][0]["status"] == "applied"


def test_refresh_token_works_once_and_its_reuse_revokes_the_device(app, world, tmp_path, client):
    """§5.8 tokens: a refresh token rotates once; presenting a spent one (a copied phone) revokes the device."""
    phone_ = phone(app, tmp_path, world["worker"])
    stolen = phone_._meta("refresh_token")
    phone_._refresh()  # the legitimate rotation
    assert phone_._meta("refresh_token") != stolen
    assert phone_.pull() == 1, "the rotated tokens work"

    response = client.post("/api/v1/devices/token", json={"refresh_token": stolen})  # the copy tries it
    assert problem_of(response) == (403, "sync.device_revoked")
    assert response.get_json()["details"]["wipe"] is True
    db.session.expire_all()
    device = db.session.get(Device, uuid.UUID(phone_.device_id))
    assert (device.state, device.state_reason) == ("revoked", "refresh token reused")
    event = db.session.scalar(select(AuditEvent).where(AuditEvent.object_id == phone_.device_id))
    assert (event.actor_id, event.details) == (None, {"from": "active", "to": "revoked"})

    before = stored()
    for token in (stolen, phone_._meta("refresh_token")):
        again = client.post("/api/v1/devices/token", json={"refresh_token": token})
        assert problem_of(again) == (403, "sync.device_revoked")
    assert problem_of(client.get(CHANGES, headers=bearer(phone_._meta("access_token")))) == (
        403, "sync.device_revoked")
    assert stored() == before
    with pytest.raises(SyncError):
        phone_.pull()
    assert phone_.incidents() == {} and phone_._meta("refresh_token") is None


def test_user_token_on_sync_endpoints_needs_a_device_token(app, world, client):
    """§5.3: a grid worker's ordinary (non-device) token on the sync endpoints → 401 `sync.device_token_required`."""
    headers, staff = token_for(world["worker"]), token_for(world["dispatcher"])
    before = stored()
    body = {"protocol_version": p.PROTOCOL_VERSION, "mutations": [{
        "mutation_id": str(uuid.uuid4()), "device_seq": 1, "type": "incident.create", "incident_id": str(uuid.uuid4()),
        "data": {"category": "06010", "description": "no device", "location": location(0)}}]}
    for response in (client.post(MUTATIONS, json=body, headers=headers),
                     client.get(CHANGES, headers=headers),
                     client.post(VERIFY, json={"cursor": "x.y", "buckets": {}}, headers=headers)):
        assert problem_of(response) == (401, "sync.device_token_required")
    assert problem_of(client.get(CHANGES, headers=staff)) == (403, "auth.forbidden")
    assert problem_of(client.post(MUTATIONS, json=body, headers=staff)) == (403, "auth.forbidden")
    assert stored() == before


def test_only_grid_workers_register_phones(app, world, client):
    """§5.8 registration: a dispatcher gets 403 `auth.forbidden`, a wrong password 401; no device or token is created."""
    before = stored()
    for username, password, expected in (("dispatcher", PASSWORD, (403, "auth.forbidden")),
                                         ("chief", PASSWORD, (403, "auth.forbidden")),
                                         ("worker", "wrong-password", (401, "auth.invalid_credentials"))):
        response = client.post("/api/v1/devices/register", json={
            "username": username, "password": password, "install_id": "install-" + username})
        assert problem_of(response) == expected, username
    assert stored() == before
    response = client.post("/api/v1/devices/register", json={
        "username": "worker", "password": PASSWORD, "install_id": "install-worker"})
    assert response.status_code == 201
    assert response.get_json()["scope"] == {"epoch": world["worker"].scope_epoch,
                                            "cells": codes(world["cells_a"][:3])}


def test_expired_access_token_is_refreshed_transparently(app, world, tmp_path):
    """§5.8: an access token past its expiry gets 401; the client rotates its refresh token and carries on."""
    reporter = phone(app, tmp_path, world["other_worker"], name="reporter")
    seen = reporter.report("06010", "to pull", *point_in(0))
    reporter.push()
    client = phone(app, tmp_path, world["worker"])
    access, refresh = client._meta("access_token"), client._meta("refresh_token")
    db.session.execute(text("UPDATE api_tokens SET expires_at = now() - interval '1 minute' WHERE device_id = :d"),
                       {"d": uuid.UUID(client.device_id)})
    db.session.commit()
    calls_before = len(client.transport.calls)
    incident_id = client.report("06010", "pushed with an expired token", *point_in(1))
    assert client.push() == {"applied": 1}
    assert client.transport.calls[calls_before:] == [
        ("POST", MUTATIONS), ("POST", "/api/v1/devices/token"), ("POST", MUTATIONS)]
    assert client._meta("access_token") != access and client._meta("refresh_token") != refresh
    client.pull()
    assert {seen, incident_id} <= set(client.incidents())
    db.session.expire_all()
    assert db.session.get(Device, uuid.UUID(client.device_id)).state == "active"
    assert count(DeviceRefreshToken, DeviceRefreshToken.used_at.is_not(None)) == 1
    assert_exactly_once(client)
