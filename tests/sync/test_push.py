"""Push: exactly once, quarantine instead of bouncing, three-way merge with field ownership."""
import uuid

import pytest
from sqlalchemy import func, select

from geo.crs import from_wgs84
from gridapp.extensions import db
from gridapp.models import Incident, IncidentRevision, QuarantineItem, SyncConflict
from gridapp.services import incidents
from gridapp.services.categories import import_catalogue, parse_catalogue_csv
from gridapp.services.demo import DEFAULT_CATALOGUE
from sync import protocol as p
from tests.factories import CELL, ORIGIN_A, ORIGIN_B, make_user, make_world
from tests.sync.phones import assert_exactly_once, phone

WEST, NORTH = ORIGIN_A
IN_CELL_0 = (WEST + CELL * 0.5, NORTH - CELL * 0.5)
IN_CELL_1 = (WEST + CELL * 1.5, NORTH - CELL * 0.5)


@pytest.fixture
def world(app):
    world = make_world(cols=3, rows=2)
    import_catalogue(parse_catalogue_csv(DEFAULT_CATALOGUE.read_text(encoding="utf-8")))
    world["worker"] = make_user("worker", "grid_worker", world["township_a"], cells=world["cells_a"][:3])
    world["other_worker"] = make_user("other", "grid_worker", world["township_a"], cells=world["cells_a"][3:])
    world["dispatcher"] = make_user("dispatcher", "dispatcher", world["township_a"])
    db.session.commit()
    return world


def count(model, *where):
    db.session.expire_all()
    return db.session.scalar(select(func.count()).select_from(model).where(*where))


def push_raw(client, mutations, protocol_version=p.PROTOCOL_VERSION):
    body = {"protocol_version": protocol_version, "mutations": mutations}
    return client._call("POST", "/api/v1/sync/mutations", body).body["results"]


def test_report_is_created_once_placed_by_the_database(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    first = client.report("06010", "暴露垃圾 in the lane", *IN_CELL_1, accuracy=5.0)
    outside = client.report("06010", "far away", WEST - 0.01, NORTH, crs="wgs84")
    unknown = client.report("99999", "no such category", *IN_CELL_0)
    assert client.push() == {"applied": 3}
    incident = db.session.get(Incident, uuid.UUID(first))
    assert incident.cell.code == world["cells_a"][1].code and not incident.is_outside_grid
    assert incident.case_number.startswith("330521") and len(incident.case_number) == 19
    assert incident.category.name == "暴露垃圾" and incident.gps_accuracy_m == 5.0
    far = db.session.get(Incident, uuid.UUID(outside))
    assert far.is_outside_grid and far.cell_id is None and far.township_id == world["township_a"].id
    assert db.session.get(Incident, uuid.UUID(unknown)).category_id is None
    results = client.results()
    assert [r["warnings"] for r in results.values() if r["incident_id"] == outside] == [["outside_grid"]]
    assert_exactly_once(client)


def test_gcj02_report_is_converted_before_placing(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    lon, lat = from_wgs84(*IN_CELL_1, "gcj02")
    incident_id = client.report("06010", "amap fix", lon, lat, crs="gcj02")
    client.push()
    incident = db.session.get(Incident, uuid.UUID(incident_id))
    assert incident.cell.code == world["cells_a"][1].code
    assert incident.raw_location == {"lon": lon, "lat": lat, "crs": "gcj02"}


def test_replayed_batch_is_duplicate_with_the_original_result(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    client.report("06010", "one", *IN_CELL_0)
    batch = client.outbox()
    first = push_raw(client, batch)
    again = push_raw(client, batch)  # the response of the first was "lost"
    assert [r["status"] for r in first] == ["applied"]
    assert [r["status"] for r in again] == ["duplicate"]
    assert again[0]["case_number"] == first[0]["case_number"] and again[0]["version"] == first[0]["version"]
    assert again[0]["applied_seq"] == first[0]["applied_seq"]
    assert count(Incident) == 1


def test_same_mutation_id_with_another_body_is_quarantined(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    client.report("06010", "original", *IN_CELL_0)
    original = client.outbox()[0]
    push_raw(client, [original])
    forged = {**original, "data": {**original["data"], "description": "rewritten"}}
    for _ in range(2):  # replaying the forged body does not pile up quarantine rows
        result = push_raw(client, [forged])[0]
        assert result["status"] == "quarantined" and result["code"] == p.MUTATION_ID_REUSE
    assert db.session.get(Incident, uuid.UUID(original["incident_id"])).description == "original"
    assert count(QuarantineItem) == 1


def test_reused_device_seq_is_quarantined(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    client.report("06010", "a", *IN_CELL_0)
    first = client.outbox()[0]
    push_raw(client, [first])
    clone = {**first, "mutation_id": str(uuid.uuid4()), "incident_id": str(uuid.uuid4())}
    result = push_raw(client, [clone])[0]
    assert result["code"] == p.DEVICE_SEQ_REUSE
    assert count(Incident) == 1


def test_cloned_outbox_on_a_new_install_is_deduplicated(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    client.report("06010", "a", *IN_CELL_0)
    batch = client.outbox()
    push_raw(client, batch)
    restored = phone(app, tmp_path, world["worker"], name="restored")  # another install_id → another device
    assert restored.device_id != client.device_id
    assert [r["status"] for r in push_raw(restored, batch)] == ["duplicate"]
    assert count(Incident) == 1


def test_mixed_batch_quarantines_only_the_bad_item_and_its_dependents(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    good = [client.report("06010", f"good {i}", *IN_CELL_0) for i in range(3)]
    bad = client.report("06010", "bad", 500.0, NORTH)  # longitude out of range
    client.add_note(bad, "a note on the bad one")
    client.add_note(good[0], "a note on a good one")
    outbox = client.outbox()
    outbox.insert(2, {"mutation_id": str(uuid.uuid4()), "device_seq": 99, "type": "incident.teleport",
                      "incident_id": str(uuid.uuid4())})
    results = push_raw(client, outbox)
    statuses = [(r["status"], r.get("code")) for r in results]
    assert statuses == [("applied", None), ("applied", None), ("quarantined", p.UNSUPPORTED_TYPE),
                        ("applied", None), ("quarantined", p.VALIDATION_FAILED),
                        ("quarantined", p.DEPENDS_ON_QUARANTINED), ("applied", None)]
    assert count(Incident) == 3
    stored = db.session.scalar(select(QuarantineItem).where(QuarantineItem.code == p.VALIDATION_FAILED))
    assert stored.payload["data"]["description"] == "bad"  # kept whole for the dispatcher


def test_missing_fields_and_garbage_items_never_wedge_the_queue(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    garbage = ["not an object", {"mutation_id": "nope"}, {"mutation_id": str(uuid.uuid4()), "device_seq": 7,
               "type": "incident.create", "incident_id": str(uuid.uuid4())},
               {"mutation_id": str(uuid.uuid4()), "device_seq": 8, "type": "incident.create",
                "incident_id": str(uuid.uuid4()), "data": {"category": "06010", "description": "\x00ok\ud800",
                                                           "location": {"lon": float("1e400"), "lat": 1}}}]
    results = push_raw(client, garbage)
    assert [r["status"] for r in results] == ["quarantined"] * 4
    assert {r["code"] for r in results} == {p.VALIDATION_FAILED}
    assert count(QuarantineItem) == 4 and count(Incident) == 0


def test_update_before_its_create_is_retried_then_applied_once(world, tmp_path, app):
    reporter = phone(app, tmp_path, world["worker"], name="a")
    incident_id = reporter.report("06010", "created late", *IN_CELL_0)
    create = reporter.outbox()[0]
    reporter.db.execute("DELETE FROM outbox")
    reporter.db.commit()
    editor = phone(app, tmp_path, world["worker"], name="b")
    editor.db.execute("INSERT INTO incidents VALUES (?, 1, ?)",
                      (incident_id, '{"description": "created late"}'))
    editor.db.commit()
    editor.edit(incident_id, description="edited before the create arrived")
    assert editor.push() == {"retry": 1} and len(editor.outbox()) == 1
    assert push_raw(reporter, [create])[0]["status"] == "applied"
    assert editor.push() == {"applied": 1}
    incident = db.session.get(Incident, uuid.UUID(incident_id))
    assert incident.version == 2 and incident.description == "edited before the create arrived"


def test_create_in_another_township_and_update_outside_scope_are_quarantined(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    client.report("06010", "in township B", ORIGIN_B[0] + CELL / 2, ORIGIN_B[1] - CELL / 2)
    assert client.push() == {"quarantined": 1}
    other = phone(app, tmp_path, world["other_worker"], name="other")
    foreign = other.report("06010", "in the other worker's cell", WEST + CELL * 0.5, NORTH - CELL * 1.5)
    other.sync()
    client.db.execute("INSERT INTO incidents VALUES (?, 1, ?)", (foreign, '{"description": "x"}'))
    client.db.commit()
    client.edit(foreign, description="not mine")
    assert client.push() == {"quarantined": 1}
    item = db.session.scalars(select(QuarantineItem).order_by(QuarantineItem.id)).all()[-1]
    assert item.code == p.OUT_OF_SCOPE and item.incident_id == uuid.UUID(foreign)


# --- three-way merge --------------------------------------------------------------------------------
@pytest.fixture
def synced(world, tmp_path, app):
    client = phone(app, tmp_path, world["worker"])
    incident_id = client.report("06010", "base text", *IN_CELL_0)
    client.sync()
    return client, incident_id


def dispatch_sets(incident_id, world, **values):
    incident = incidents.lock_incident(uuid.UUID(incident_id))
    incidents.change_fields(incident, values, actor=world["dispatcher"], source="dispatch", mutation_id=None)
    db.session.commit()


def test_disjoint_fields_both_survive(world, synced):
    client, incident_id = synced
    dispatch_sets(incident_id, world, status="registered")
    client.edit(incident_id, description="more detail")
    assert client.push() == {"applied": 1}
    incident = db.session.get(Incident, uuid.UUID(incident_id))
    assert (incident.status, incident.description, incident.version) == ("registered", "more detail", 3)
    assert count(SyncConflict) == 0


def test_same_worker_field_client_wins_and_dispatch_value_is_kept(world, synced):
    client, incident_id = synced
    dispatch_sets(incident_id, world, description="dispatch wording")
    client.edit(incident_id, description="worker on site")
    assert client.push() == {"merged": 1}
    incident = db.session.get(Incident, uuid.UUID(incident_id))
    assert incident.description == "worker on site"
    conflict = db.session.scalar(select(SyncConflict))
    assert (conflict.field, conflict.server_value, conflict.client_value, conflict.state) == (
        "description", "dispatch wording", "worker on site", "needs_review")
    history = db.session.scalars(select(IncidentRevision).where(IncidentRevision.incident_id == incident.id)
                                 .order_by(IncidentRevision.version)).all()
    assert history[-1].changes["description"] == {"from": "dispatch wording", "to": "worker on site"}


def test_convergent_edit_is_no_conflict(world, synced):
    client, incident_id = synced
    dispatch_sets(incident_id, world, description="same answer")
    client.edit(incident_id, description="same answer")
    assert client.push() == {"applied": 1}
    assert count(SyncConflict) == 0
    assert db.session.get(Incident, uuid.UUID(incident_id)).version == 2


def test_dispatch_owned_field_is_kept_by_the_server(world, synced):
    client, incident_id = synced
    client.edit(incident_id, status="closed")
    result = push_raw(client, client.outbox())[0]
    assert result["status"] == "merged" and result["conflicts"][0]["resolution"] == "server_kept"
    assert db.session.get(Incident, uuid.UUID(incident_id)).status == "reported"


def test_location_edit_moves_the_incident_between_cells(world, synced):
    client, incident_id = synced
    client.edit(incident_id, location={"lon": IN_CELL_1[0], "lat": IN_CELL_1[1], "crs": "wgs84"})
    client.push()
    assert db.session.get(Incident, uuid.UUID(incident_id)).cell.code == world["cells_a"][1].code


def test_two_phones_same_base_version(world, tmp_path, app, synced):
    client, incident_id = synced
    second = phone(app, tmp_path, world["worker"], name="second")
    second.pull()
    client.edit(incident_id, description="phone one")
    second.edit(incident_id, description="phone two")
    client.push()
    assert second.push() == {"merged": 1}
    incident = db.session.get(Incident, uuid.UUID(incident_id))
    assert incident.description == "phone two" and incident.version == 3
    assert count(SyncConflict) == 1
    assert_exactly_once(client, second)


def test_two_offline_edits_of_one_field_build_on_each_other(world, synced):
    client, incident_id = synced
    client.edit(incident_id, description="first")
    client.edit(incident_id, description="second")
    assert client.push() == {"applied": 2}
    assert count(SyncConflict) == 0
    assert db.session.get(Incident, uuid.UUID(incident_id)).description == "second"
