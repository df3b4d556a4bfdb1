"""Pull (paging, notes, categories, echo, verify), envelope limits, and the dispatcher's review queues."""
import gzip
import json
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from gridapp.extensions import db
from gridapp.models import AuditEvent, Device, Incident, QuarantineItem, SyncConflict, utcnow
from gridapp.services import incidents
from gridapp.services.categories import import_catalogue, parse_catalogue_csv
from gridapp.services.demo import DEFAULT_CATALOGUE
from sync import protocol as p
from sync.client import SyncError
from tests.factories import CELL, ORIGIN_A, ORIGIN_B, make_user, make_world, token_for
from tests.sync.phones import phone

WEST, NORTH = ORIGIN_A
IN_CELL_0 = (WEST + CELL * 0.5, NORTH - CELL * 0.5)


@pytest.fixture
def world(app):
    world = make_world(cols=3, rows=2)
    import_catalogue(parse_catalogue_csv(DEFAULT_CATALOGUE.read_text(encoding="utf-8")))
    world["worker"] = make_user("worker", "grid_worker", world["township_a"], cells=world["cells_a"][:3])
    world["worker_b"] = make_user("worker_b", "grid_worker", world["township_b"], cells=world["cells_b"])
    world["dispatcher"] = make_user("dispatcher", "dispatcher", world["township_a"])
    world["dispatcher_b"] = make_user("dispatcher_b", "dispatcher", world["township_b"])
    db.session.commit()
    return world


def test_first_pull_brings_categories_own_reports_and_notes(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    incident_id = client.report("06010", "garbage", *IN_CELL_0)
    client.add_note(incident_id, "photographed from the north")
    client.sync()
    local = client.incidents()[incident_id]
    assert local["version"] == 1 and local["data"]["cell_code"] == world["cells_a"][0].code
    assert local["data"]["case_number"].startswith("330521")
    assert [n["text"] for n in client.notes().values()] == ["photographed from the north"]
    categories = client.db.execute("SELECT count(*) FROM categories").fetchone()[0]
    assert categories == 97
    # Own-write echo and a re-pull change nothing.
    client.pull()
    assert client.incidents()[incident_id]["version"] == 1


def test_paging_delivers_everything_once_in_commit_order(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    for i in range(23):
        client.report("06010", f"r{i}", *IN_CELL_0)
    client.push()
    seen, cursor = [], None
    while True:
        page = client._call("GET", "/api/v1/sync/changes", query={"limit": 10, **({"cursor": cursor} if cursor else {})}).body
        seen.extend(c for c in page["changes"] if c["entity"] == "incident")
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    ids = [c["id"] for c in seen]
    assert len(ids) == len(set(ids)) == 23
    seqs = [c["seq"] for c in seen]
    assert seqs == sorted(seqs)


@pytest.mark.parametrize("window_factor", [1, 16])
def test_paging_across_long_stretches_of_other_scopes_changes(world, tmp_path, app, monkeypatch, window_factor):
    """The incremental scan works in sync_seq windows that widen when they hold too little; a stretch of
    another township's changes longer than any window must neither hide nor repeat anything."""
    from sync import pull
    monkeypatch.setattr(pull, "first_window", lambda limit, *_: limit * window_factor)
    mine, other = phone(app, tmp_path, world["worker"], "a"), phone(app, tmp_path, world["worker_b"], "b")
    west_b, north_b = ORIGIN_B
    expected = []
    for burst in range(3):
        expected += [mine.report("06010", f"a{burst}.{i}", *IN_CELL_0) for i in range(2)]
        mine.push()
        for i in range(40):
            other.report("06010", f"b{burst}.{i}", west_b + CELL * 0.5, north_b - CELL * 0.5)
        other.push()
    seen, cursor = [], None
    while True:
        page = mine._call("GET", "/api/v1/sync/changes", query={"limit": 3, **({"cursor": cursor} if cursor else {})}).body
        seen.extend(c for c in page["changes"] if c["entity"] == "incident")
        cursor = page["next_cursor"]
        if not page["has_more"]:
            break
    assert [c["id"] for c in seen] == expected  # all of mine, once, in commit order; none of the other's


def test_dispatch_change_reaches_the_phone_and_is_acknowledged(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    incident_id = client.report("06010", "x", *IN_CELL_0)
    client.sync()
    incident = incidents.lock_incident(uuid.UUID(incident_id))
    incidents.change_fields(incident, {"status": "registered"}, actor=world["dispatcher"], source="dispatch",
                            mutation_id=None)
    db.session.commit()
    seq = db.session.get(Incident, uuid.UUID(incident_id)).sync_seq
    client.pull()
    assert client.incidents()[incident_id]["data"]["status"] == "registered"
    client.pull()  # presenting the cursor acknowledges what the phone has
    assert db.session.get(Device, uuid.UUID(client.device_id)).last_ack_seq >= seq


def test_verify_ok_then_repairs_drift(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    ids = [client.report("06010", f"r{i}", *IN_CELL_0) for i in range(3)]
    client.sync()
    assert client.verify()["status"] == "ok"
    # Drift: one row lost locally, one stale, one that should not be there.
    client.db.execute("DELETE FROM incidents WHERE id = ?", (ids[0],))
    client.db.execute("UPDATE incidents SET version = 7 WHERE id = ?", (ids[1],))
    client.db.execute("INSERT INTO incidents VALUES (?, 1, ?)",
                      (str(uuid.uuid4()), json.dumps({"cell_code": world["cells_a"][0].code})))
    client.db.commit()
    outcome = client.verify()
    assert outcome["status"] == "mismatch" and outcome["buckets"] == [world["cells_a"][0].code]
    assert sorted(client.incidents()) == sorted(ids)
    assert {r["version"] for r in client.incidents().values()} == {1}
    assert client.verify()["status"] == "ok"


def test_verify_with_an_old_cursor_is_stale(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    client.report("06010", "x", *IN_CELL_0)
    client.sync()
    other = phone(app, tmp_path, world["worker"], name="other")
    other.report("06010", "y", *IN_CELL_0)
    other.push()
    assert client.verify(repair=False)["status"] == "stale"


# --- envelope limits -------------------------------------------------------------------------------------
def _post(app, client, body: bytes, **headers):
    token = client._meta("access_token")
    return app.test_client().post("/api/v1/sync/mutations", data=body, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json", **headers})


def test_oversized_batch_is_413_with_the_limit_and_nothing_applied(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    for i in range(201):
        client.report("06010", f"r{i}", *IN_CELL_0)
    response = _post(app, client, json.dumps({"protocol_version": 1, "mutations": client.outbox()}).encode())
    assert response.status_code == 413
    assert response.get_json()["code"] == "payload_too_large"
    assert response.get_json()["details"]["limit_mutations"] == 200
    assert db.session.scalar(select(func.count()).select_from(Incident)) == 0
    client.push(batch_size=200)  # split batches then apply exactly once
    assert db.session.scalar(select(func.count()).select_from(Incident)) == 201


def test_gzip_body_bounded_inflation(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    bomb = gzip.compress(b'{"protocol_version": 1, "mutations": [' + b" " * (9 * 1024 * 1024) + b"]}")
    assert len(bomb) < 64 * 1024
    response = _post(app, client, bomb, **{"Content-Encoding": "gzip"})
    assert response.status_code == 413 and response.get_json()["details"]["limit_bytes"] == 8 * 1024 * 1024
    truncated = gzip.compress(json.dumps({"protocol_version": 1, "mutations": []}).encode())[:-6]
    response = _post(app, client, truncated, **{"Content-Encoding": "gzip"})
    assert response.status_code == 400 and response.get_json()["code"] == "bad_request"
    ok = _post(app, client, gzip.compress(json.dumps({"protocol_version": 1, "mutations": []}).encode()),
               **{"Content-Encoding": "gzip"})
    assert ok.status_code == 200 and ok.get_json()["results"] == []


def test_unknown_protocol_version_and_bad_envelope(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    response = _post(app, client, json.dumps({"protocol_version": 2, "mutations": []}).encode())
    assert response.status_code == 400 and response.get_json()["code"] == "sync.protocol_unsupported"
    response = _post(app, client, b'{"mutations": {}}')
    assert response.status_code == 422 and response.get_json()["code"] == "validation_error"
    response = _post(app, client, b"[1, 2")
    assert response.status_code == 400


def test_clock_skew_is_recorded_and_flagged_never_rejected(world, tmp_path, app):
    skewed = phone(app, tmp_path, world["worker"])
    skewed.clock = lambda: utcnow() + timedelta(days=730)
    incident_id = skewed.report("06010", "from the future", *IN_CELL_0)
    assert skewed.push() == {"applied": 1}
    incident = db.session.get(Incident, uuid.UUID(incident_id))
    assert incident.clock_suspect and incident.created_at_device.year == utcnow().year + 2
    device = db.session.get(Device, uuid.UUID(skewed.device_id))
    assert device.clock_offset_ms < -700 * 24 * 3600 * 1000
    past = phone(app, tmp_path, world["worker"], name="1970")
    past.clock = lambda: utcnow().replace(year=1970)
    past.report("06010", "from 1970", *IN_CELL_0)
    assert past.push() == {"applied": 1}


def test_the_clock_is_recorded_again_only_when_it_moved_or_its_record_is_old(world, tmp_path, app):
    """A phone pushing often writes its devices row once a minute, unless its clock offset moves by more than
    sync.devices.CLOCK_RECORD_DRIFT_MS."""
    client = phone(app, tmp_path, world["worker"])
    device_id = uuid.UUID(client.device_id)

    def recorded():
        db.session.expire_all()
        device = db.session.get(Device, device_id)
        return device.clock_offset_ms, device.last_seen_at

    def push():
        client.report("06010", "a report", *IN_CELL_0)
        assert client.push() == {"applied": 1}

    push()
    first = recorded()
    assert first[0] is not None and abs(first[0]) < 60_000
    push()
    assert recorded() == first, "the same clock a moment later: nothing written"
    client.clock = lambda: utcnow() - timedelta(seconds=30)
    push()
    moved = recorded()
    assert 29_000 < moved[0] < 60_000 and moved[1] > first[1], "the offset moved: recorded at once"
    db.session.get(Device, device_id).last_seen_at = moved[1] - timedelta(minutes=2)
    db.session.commit()
    push()
    again = recorded()
    assert again[1] > moved[1] and abs(again[0] - moved[0]) < 1000, "a record older than a minute: written again"


def test_a_pull_page_is_gzipped_for_phones_that_accept_it(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    response = app.test_client().get("/api/v1/sync/changes", headers={
        "Authorization": f"Bearer {client._meta('access_token')}", "Accept-Encoding": "gzip"})
    assert response.headers["Content-Encoding"] == "gzip"
    assert len(json.loads(gzip.decompress(response.get_data()))["changes"]) == 97


# --- review -------------------------------------------------------------------------------------------
@pytest.fixture
def quarantined(world, tmp_path, app):
    """A worker's report in a cell of township B (out of scope) and a bad update of their own report."""
    client = phone(app, tmp_path, world["worker"])
    own = client.report("06010", "mine", *IN_CELL_0)
    client.sync()
    client.report("06010", "over the border", ORIGIN_B[0] + CELL / 2, ORIGIN_B[1] - CELL / 2)
    client.edit(own, description="x" * 5000)  # longer than a description may be
    client.edit(own, category="06012")  # depends on the refused edit: quarantined too
    assert client.push() == {"quarantined": 3}
    return client, own


def _review(app, user, method, url, body=None):
    return app.test_client().open(url, method=method, json=body, headers=token_for(user))


def test_dispatchers_see_quarantine_of_their_area_only(world, quarantined, app):
    items = _review(app, world["dispatcher"], "GET", "/api/v1/sync/quarantine").get_json()
    assert {i["code"] for i in items} == {p.OUT_OF_SCOPE, p.VALIDATION_FAILED, p.DEPENDS_ON_QUARANTINED}
    assert all(i["payload"] for i in items)
    assert _review(app, world["dispatcher_b"], "GET", "/api/v1/sync/quarantine").get_json() == []
    assert _review(app, world["worker"], "GET", "/api/v1/sync/quarantine").status_code == 403
    item = items[0]
    response = _review(app, world["dispatcher_b"], "POST", f"/api/v1/sync/quarantine/{item['id']}/resolve",
                       {"action": "discard", "reason": "not mine"})
    assert response.status_code == 404 and response.get_json()["code"] == "sync.review_item_not_found"


def test_apply_a_quarantined_item_then_the_phone_replay_is_duplicate(world, quarantined, app):
    client, _ = quarantined
    item = next(i for i in _review(app, world["dispatcher"], "GET", "/api/v1/sync/quarantine").get_json()
                if i["code"] == p.OUT_OF_SCOPE)
    response = _review(app, world["dispatcher"], "POST", f"/api/v1/sync/quarantine/{item['id']}/resolve",
                       {"action": "apply", "reason": "border case, we take it"})
    assert response.status_code == 200 and response.get_json()["state"] == "applied"
    assert db.session.get(Incident, uuid.UUID(item["incident_id"])) is not None
    replay = client._call("POST", "/api/v1/sync/mutations", {"protocol_version": 1, "mutations": [item["payload"]]})
    assert replay.body["results"][0]["status"] == "duplicate"
    again = _review(app, world["dispatcher"], "POST", f"/api/v1/sync/quarantine/{item['id']}/resolve",
                    {"action": "discard", "reason": "twice"})
    assert again.status_code == 409 and again.get_json()["code"] == "sync.review_item_closed"
    audit = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "sync.quarantine.apply"))
    assert audit.reason == "border case, we take it" and audit.actor_id == world["dispatcher"].id


def test_edit_and_apply_and_discard_need_a_reason(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    client.report("06010", "bad point", 500.0, NORTH)
    client.push()
    item = _review(app, world["dispatcher"], "GET", "/api/v1/sync/quarantine").get_json()[0]
    assert item["code"] == p.VALIDATION_FAILED
    url = f"/api/v1/sync/quarantine/{item['id']}/resolve"
    no_reason = _review(app, world["dispatcher"], "POST", url, {"action": "discard"})
    assert no_reason.status_code == 422
    still_bad = _review(app, world["dispatcher"], "POST", url, {"action": "apply", "reason": "try"})
    assert still_bad.status_code == 422 and db.session.scalar(select(func.count()).select_from(Incident)) == 0
    fixed = json.loads(json.dumps(item["payload"]))
    fixed["data"]["location"]["lon"] = IN_CELL_0[0]
    response = _review(app, world["dispatcher"], "POST", url, {"action": "edit_and_apply", "reason": "lon typo",
                                                                "payload": fixed})
    assert response.status_code == 200
    incident = db.session.scalar(select(Incident))
    assert incident.cell.code == world["cells_a"][0].code
    db.session.expire_all()
    assert db.session.get(QuarantineItem, item["id"]).state == "applied"


def test_conflicts_are_listed_and_resolved(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    incident_id = client.report("06010", "base", *IN_CELL_0)
    client.sync()
    incident = incidents.lock_incident(uuid.UUID(incident_id))
    incidents.change_fields(incident, {"description": "dispatch text"}, actor=world["dispatcher"],
                            source="dispatch", mutation_id=None)
    db.session.commit()
    client.edit(incident_id, description="worker text")
    client.push()
    conflicts = _review(app, world["dispatcher"], "GET", "/api/v1/sync/conflicts").get_json()
    assert [(c["field"], c["server_value"], c["client_value"]) for c in conflicts] == [
        ("description", "dispatch text", "worker text")]
    response = _review(app, world["dispatcher"], "POST", f"/api/v1/sync/conflicts/{conflicts[0]['id']}/resolve",
                       {"action": "restore_server", "reason": "the worker's text was wrong"})
    assert response.status_code == 200
    db.session.expire_all()
    assert db.session.get(Incident, uuid.UUID(incident_id)).description == "dispatch text"
    assert db.session.get(SyncConflict, conflicts[0]["id"]).state == "resolved"
    assert _review(app, world["dispatcher"], "GET", "/api/v1/sync/conflicts").get_json() == []
    client.pull()
    assert client.incidents()[incident_id]["data"]["description"] == "dispatch text"


def test_outside_grid_reports_are_listed_for_dispatch(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    far = client.report("06010", "in the fields", WEST - 0.05, NORTH)
    client.report("06010", "in a cell", *IN_CELL_0)
    client.push()
    listed = _review(app, world["dispatcher"], "GET", "/api/v1/incidents?outside_grid=true").get_json()
    assert [i["id"] for i in listed] == [far] and listed[0]["is_outside_grid"]
    detail = _review(app, world["dispatcher"], "GET", f"/api/v1/incidents/{far}").get_json()
    assert detail["revisions"][0]["version"] == 1 and detail["cell_code"] is None
    assert _review(app, world["dispatcher_b"], "GET", f"/api/v1/incidents/{far}").status_code == 404
    with pytest.raises(SyncError):
        client._call("GET", f"/api/v1/incidents/{far}")  # a device token is a grid worker's: 403
