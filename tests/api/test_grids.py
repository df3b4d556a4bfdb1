import pytest

from geo.crs import from_wgs84
from gridapp.extensions import db
from tests.factories import CELL, ORIGIN_A, make_user, make_world, token_for


@pytest.fixture
def world(app):
    world = make_world(cols=3, rows=2)
    world["dispatcher_a"] = make_user("dispatcher_a", "dispatcher", world["township_a"])
    world["worker_a"] = make_user("worker_a", "grid_worker", world["township_a"], cells=world["cells_a"][:1])
    world["supervisor"] = make_user("supervisor", "supervisor", world["county"])
    db.session.commit()
    return world


def _get(client, user, url):
    return client.get(url, headers=token_for(user))


def test_cells_are_rfc7946_features_in_the_users_area(client, world):
    response = _get(client, world["dispatcher_a"], "/api/v1/grids/cells")
    assert response.status_code == 200 and response.mimetype == "application/geo+json"
    body = response.get_json()
    assert body["type"] == "FeatureCollection" and "crs" not in body
    assert [f["id"] for f in body["features"]] == [c.code for c in world["cells_a"]]
    feature = body["features"][0]
    assert feature["geometry"]["type"] == "Polygon"
    ring = feature["geometry"]["coordinates"][0]
    # Right-hand rule: the exterior ring is counter-clockwise (positive shoelace area).
    area2 = sum(x1 * y2 - x2 * y1 for (x1, y1), (x2, y2) in zip(ring, ring[1:]))
    assert area2 > 0
    assert feature["properties"]["village"]["code"] == world["village_a"].code
    assert 10000 < feature["properties"]["area_m2"] < 11000  # 0.001° squares at 30.5°N
    # The county supervisor sees both townships.
    county = _get(client, world["supervisor"], "/api/v1/grids/cells").get_json()
    assert len(county["features"]) == 12


def test_cells_paging_and_bbox(client, world):
    first = _get(client, world["supervisor"], "/api/v1/grids/cells?limit=5").get_json()
    assert first["numberReturned"] == 5
    next_link = next(link["href"] for link in first["links"] if link["rel"] == "next")
    second = client.get(next_link.replace("http://localhost", ""), headers=token_for(world["supervisor"])).get_json()
    seen = [f["id"] for f in first["features"] + second["features"]]
    assert len(set(seen)) == 10 and seen == sorted(seen)
    west, north = ORIGIN_A
    # A bbox around the first cell's interior only.
    inside = f"{west + CELL * 0.2},{north - CELL * 0.8},{west + CELL * 0.8},{north - CELL * 0.2}"
    body = _get(client, world["supervisor"], f"/api/v1/grids/cells?bbox={inside}").get_json()
    assert [f["id"] for f in body["features"]] == [world["cells_a"][0].code]
    assert body["links"] == []


@pytest.mark.parametrize("query", [
    "bbox=1,2,3", "bbox=a,b,c,d", "bbox=10,10,5,5", "bbox=-200,0,0,10", "limit=0", "limit=x", "after=123",
])
def test_cells_bad_arguments(client, world, query):
    response = _get(client, world["supervisor"], f"/api/v1/grids/cells?{query}")
    assert response.status_code == 422
    assert response.get_json()["code"] == "validation_error"
    assert response.get_json()["details"]["fields"]


def test_one_cell_with_its_workers_and_area_rule(client, world):
    code = world["cells_a"][0].code
    body = _get(client, world["dispatcher_a"], f"/api/v1/grids/cells/{code}").get_json()
    assert body["id"] == code
    assert body["properties"]["workers"] == [{"username": "worker_a", "display_name": "worker_a"}]
    # A cell of township B does not exist for township A's dispatcher.
    other = _get(client, world["dispatcher_a"], f"/api/v1/grids/cells/{world['cells_b'][0].code}")
    assert other.status_code == 404 and other.get_json()["code"] == "grid.not_found"
    assert _get(client, world["supervisor"], f"/api/v1/grids/cells/{world['cells_b'][0].code}").status_code == 200
    bad = _get(client, world["dispatcher_a"], "/api/v1/grids/cells/12345")
    assert bad.status_code == 422 and bad.get_json()["code"] == "validation_error"


def _locate(client, user, lon, lat, crs=None):
    url = f"/api/v1/grids/locate?lon={lon!r}&lat={lat!r}" + (f"&crs={crs}" if crs else "")
    return _get(client, user, url)


def test_locate_interior_edge_vertex_and_outside(client, world):
    west, north = ORIGIN_A
    cells = [c.code for c in world["cells_a"]]  # 3 × 2, codes west→east then north→south
    user = world["dispatcher_a"]
    interior = _locate(client, user, west + CELL * 1.5, north - CELL * 0.5).get_json()
    assert interior["code"] == cells[1] and interior["village"]["code"] == world["village_a"].code
    # Shared edge between cells 1 and 2: the lower code wins, every time.
    for _ in range(3):
        assert _locate(client, user, west + CELL, north - CELL * 0.5).get_json()["code"] == cells[0]
    # Vertex shared by four cells (0, 1, 3, 4).
    assert _locate(client, user, west + CELL, north - CELL).get_json()["code"] == cells[0]
    # Outer edge still belongs to the cell.
    assert _locate(client, user, west, north - CELL * 0.5).get_json()["code"] == cells[0]
    outside = _locate(client, user, west - CELL, north)
    assert outside.status_code == 404 and outside.get_json()["code"] == "grid.not_found"
    # A point in township B is outside A's dispatcher's area: 404, but the supervisor finds it.
    east_west, east_north = 120.1 + CELL / 2, north - CELL / 2
    assert _locate(client, user, east_west, east_north).status_code == 404
    assert _locate(client, world["supervisor"], east_west, east_north).get_json()["code"] == world["cells_b"][0].code


@pytest.mark.parametrize("crs", ["gcj02", "bd09", "cgcs2000", "wgs84"])
def test_locate_converts_phone_coordinates(client, world, crs):
    west, north = ORIGIN_A
    lon84, lat84 = west + CELL * 2.5, north - CELL * 1.5
    lon, lat = from_wgs84(lon84, lat84, crs)
    body = _locate(client, world["dispatcher_a"], lon, lat, crs).get_json()
    assert body["code"] == world["cells_a"][5].code
    assert abs(body["lon"] - lon84) < 1e-6 and abs(body["lat"] - lat84) < 1e-6


def test_gcj02_point_read_as_wgs84_lands_in_another_cell(client, world):
    """The reason the conversion exists: a GCJ-02 fix taken as WGS84 is hundreds of metres off."""
    west, north = ORIGIN_A
    lon, lat = from_wgs84(west + CELL * 0.5, north - CELL * 0.5, "gcj02")
    assert _locate(client, world["dispatcher_a"], lon, lat, "gcj02").get_json()["code"] == world["cells_a"][0].code
    assert _locate(client, world["dispatcher_a"], lon, lat).status_code == 404


@pytest.mark.parametrize("query,code", [
    ("lon=120&lat=", "validation_error"),
    ("lat=30", "validation_error"),
    ("lon=abc&lat=30", "validation_error"),
    ("lon=200&lat=30", "validation_error"),
    ("lon=120&lat=95", "validation_error"),
    ("lon=nan&lat=30", "validation_error"),
    ("lon=120&lat=30&crs=mars", "validation_error"),
    ("lon=10&lat=50&crs=gcj02", "geo.outside_china"),
])
def test_locate_bad_input(client, world, query, code):
    response = _get(client, world["dispatcher_a"], f"/api/v1/grids/locate?{query}")
    assert 400 <= response.status_code < 500
    assert response.get_json()["code"] == code
