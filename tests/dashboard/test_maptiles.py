"""Map tiles: the trigger-kept low-zoom counts stay exact as incidents change, and tiles show only the
caller's area, with the status classes and filters the map uses."""
import math
import uuid

from sqlalchemy import text

from gridapp.extensions import db
from gridapp.jobs.maintenance import fold_map_counts
from gridapp.models import BUCKET_LEVELS, BUCKET_ZOOM, Incident, utcnow
from gridapp.services import incidents, maptiles, workflow
from tests.dashboard.mvt import decode
from tests.factories import ORIGIN_A, ORIGIN_B, make_user
from tests.workflow.helpers import report

COUNTS = """SELECT township_id, bx, by, status_class, sum(n) FROM (
               SELECT township_id, bx, by, status_class, n FROM incident_bucket_counts WHERE zoom = :zoom
               UNION ALL SELECT township_id, bx, by, status_class, n FROM incident_bucket_deltas WHERE zoom = :zoom
             ) b GROUP BY 1, 2, 3, 4 HAVING sum(n) <> 0"""
RECOUNT = """SELECT township_id, incident_bucket_x(location_3857) >> :shift, incident_bucket_y(location_3857) >> :shift,
                    incident_status_class(status, overdue_at), count(*) FROM incidents GROUP BY 1, 2, 3, 4"""


def counts_are_exact() -> dict:
    """Check every counted level (counts + pending deltas) against a recount from the incidents; return the
    finest level's counts."""
    db.session.expire_all()
    levels = {}
    for zoom in BUCKET_LEVELS:
        kept = {tuple(r[:4]): r[4] for r in db.session.execute(text(COUNTS), {"zoom": zoom})}
        recounted = {tuple(r[:4]): r[4] for r in db.session.execute(text(RECOUNT), {"shift": BUCKET_ZOOM - zoom})}
        assert kept == recounted, zoom
        levels[zoom] = kept
    assert by_class(levels[BUCKET_LEVELS[0]]) == by_class(levels[BUCKET_LEVELS[-1]])
    return levels[BUCKET_LEVELS[0]]


def by_class(counts: dict) -> dict:
    totals = {}
    for (_township, _x, _y, cls), n in counts.items():
        totals[cls] = totals.get(cls, 0) + n
    return totals


def tile_of(lon, lat, z):
    n = 2 ** z
    return z, int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)


def test_counts_follow_inserts_status_changes_moves_overdue_and_deletes(world):
    users = world["users"]
    cases = [report(world, cell=c) for c in (0, 0, 4)]
    assert by_class(counts_are_exact()) == {"new": 3}
    workflow.perform(cases[0], "register", users["dispatcher"], prefix="")
    workflow.perform(cases[1], "reject", users["dispatcher"], prefix="", reason="不属实")
    db.session.commit()
    assert by_class(counts_are_exact()) == {"new": 1, "open": 1, "void": 1}
    assert fold_map_counts() > 0  # the periodic job: deltas move into the counts, the sum stays exact
    assert db.session.execute(text("SELECT count(*) FROM incident_bucket_deltas")).scalar() == 0
    assert by_class(counts_are_exact()) == {"new": 1, "open": 1, "void": 1}
    db.session.get(Incident, cases[0]).overdue_at = utcnow()  # what the escalation job sets
    db.session.commit()
    assert by_class(counts_are_exact()) == {"new": 1, "overdue": 1, "void": 1}
    moved = db.session.get(Incident, cases[2])
    incidents.change_fields(moved, {"location": {"lon": ORIGIN_B[0] + 0.0005, "lat": ORIGIN_B[1] - 0.0005,
                                                 "crs": "wgs84"}}, actor=users["reporter"], source="device",
                            mutation_id=None)
    db.session.commit()
    kept = counts_are_exact()
    assert {k[0] for k in kept if k[3] == "new"} == {world["township_b"].id}  # moved to the other township
    db.session.execute(text("DELETE FROM incident_revisions WHERE incident_id = :id"), {"id": cases[1]})
    db.session.execute(text("DELETE FROM incident_events WHERE incident_id = :id"), {"id": cases[1]})
    db.session.execute(text("DELETE FROM incidents WHERE id = :id"), {"id": cases[1]})
    db.session.commit()
    assert by_class(counts_are_exact()) == {"new": 1, "overdue": 1}
    fold_map_counts()
    assert by_class(counts_are_exact()) == {"new": 1, "overdue": 1}
    assert db.session.execute(text("SELECT count(*) FROM incident_bucket_counts WHERE n = 0")).scalar() == 0


def test_a_bulk_insert_is_counted_by_one_statement_and_rebuild_agrees(world):
    reporter = world["users"]["reporter"]
    db.session.execute(text("""
        INSERT INTO incidents (id, case_number, version, category_code_raw, description, location, raw_location,
                               township_id, is_outside_grid, status, reporter_id, clock_suspect, rework_count,
                               is_self_handled, is_ownerless)
        SELECT gen_random_uuid(), 'BULK' || g, 1, '06010', '', ST_SetSRID(ST_Point(120.0 + g * 0.0001, 30.4995), 4326),
               '{}'::jsonb, :township, false, (ARRAY['reported', 'handling', 'closed'])[1 + g % 3], :reporter, false,
               0, false, false
        FROM generate_series(1, 300) g"""), {"township": world["township_a"].id, "reporter": reporter.id})
    db.session.commit()
    before = counts_are_exact()
    assert by_class(before) == {"new": 100, "open": 100, "closed": 100}
    assert maptiles.rebuild_bucket_counts() >= len(before)
    db.session.commit()
    assert counts_are_exact() == before


NO_FILTERS = maptiles.TileFilters()


def _features(prefix, z, x, y, filters=NO_FILTERS):
    return decode(maptiles.incident_tile(prefix, z, x, y, filters))


def test_tiles_show_points_close_up_and_counted_groups_far_out_only_in_the_callers_area(world):
    users = world["users"]
    cases = [report(world, cell=c) for c in (0, 1, 4)]
    other = make_user("b_worker", "grid_worker", world["township_b"], cells=world["cells_b"][:1])
    incidents.create_incident(
        incident_id=uuid.uuid4(), reporter=other, device=None, category_code="06010", description="",
        location={"lon": ORIGIN_B[0] + 0.0005, "lat": ORIGIN_B[1] - 0.0005, "crs": "wgs84"}, gps_accuracy_m=None,
        created_at_device=None, clock_suspect=False, mutation_id=None, township_id=world["township_b"].id)
    workflow.perform(cases[0], "register", users["dispatcher"], prefix="")
    db.session.commit()
    township_a, county = world["township_a"].code, world["county"].code

    close = _features(township_a, *tile_of(ORIGIN_A[0] + 0.0015, ORIGIN_A[1] - 0.001, 15))["incidents"]
    assert sorted((f["class"], f["status"]) for f in close) == [("new", "reported")] * 2 + [("open", "registered")]
    only_new = _features(township_a, *tile_of(ORIGIN_A[0] + 0.0015, ORIGIN_A[1] - 0.001, 15),
                         maptiles.TileFilters(classes=("new",)))["incidents"]
    assert [f["class"] for f in only_new] == ["new", "new"]

    far = tile_of(ORIGIN_A[0], ORIGIN_A[1], 9)
    assert far == tile_of(ORIGIN_B[0], ORIGIN_B[1], 9)  # both townships in one tile
    groups = _features(township_a, *far)["clusters"]
    assert sum(g["count"] for g in groups) == 3 and sum(g.get("open", 0) for g in groups) == 1
    assert sum(g["count"] for g in _features(county, *far)["clusters"]) == 4
    # filters the counts cannot answer are counted from the points, with the same result shape
    live = _features(township_a, *far, maptiles.TileFilters(category="06", village_id=world["village_a"].id))
    assert sum(g["count"] for g in live["clusters"]) == 3
    assert _features(township_a, *far, maptiles.TileFilters(category="01")) == {}


def test_the_tile_endpoint_answers_mvt_and_refuses_bad_input(browser, world):
    report(world)
    browser.login(world["users"]["dispatcher"])
    z, x, y = tile_of(ORIGIN_A[0], ORIGIN_A[1], 10)
    response = browser.get(f"/dashboard/tiles/{z}/{x}/{y}.mvt?class=new&class=open")
    assert response.status_code == 200 and response.mimetype == "application/vnd.mapbox-vector-tile"
    assert sum(g["count"] for g in decode(response.data)["clusters"]) == 1
    assert browser.get(f"/dashboard/tiles/{z}/{x}/{y}.mvt?class=fixed").get_json()["code"] == "validation_error"
    assert browser.get(f"/dashboard/tiles/{z}/{x}/{y}.mvt?since=yesterday").status_code == 422
    assert browser.get(f"/dashboard/tiles/{z}/{2 ** z}/{y}.mvt").status_code == 404


def test_writers_in_the_same_bucket_do_not_wait_for_each_other(app, world):
    """Two open transactions report in the same place: the second's insert (and its count) does not wait
    for the first to commit, as it would on a shared counter row; both are counted once committed."""
    report(world)  # the bucket exists in the counts
    fold_map_counts()
    db.session.commit()
    reporter_id, township_id = world["users"]["reporter"].id, world["township_a"].id
    insert = text("""
        INSERT INTO incidents (id, case_number, version, category_code_raw, description, location, raw_location,
                               township_id, is_outside_grid, status, reporter_id, clock_suspect)
        VALUES (gen_random_uuid(), :number, 1, '06010', '', ST_SetSRID(ST_Point(:lon, :lat), 4326), '{}'::jsonb,
                :township, false, 'reported', :reporter, false)""")
    first, second = db.engine.connect(), db.engine.connect()
    try:
        for connection, number in ((first, "W1"), (second, "W2")):
            connection.execute(text("SET lock_timeout = '2s'"))  # a wait would fail here, not hang
            connection.execute(insert, {"number": number, "lon": ORIGIN_A[0] + 0.0005, "lat": ORIGIN_A[1] - 0.0005,
                                        "township": township_id, "reporter": reporter_id})
        second.commit()
        first.commit()
    finally:
        first.close()
        second.close()
    assert by_class(counts_are_exact()) == {"new": 3}
