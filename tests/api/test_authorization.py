"""Authorization on every endpoint: by role (403) and by area (404, never 403, outside the area)."""
import re

import pytest

from gridapp.api import PUBLIC_ENDPOINTS
from gridapp.extensions import db
from gridapp.models import ROLES
from gridapp.services.access import PERMISSIONS
from tests.factories import make_user, make_world, token_for

SAMPLE_PATH_VALUES = {"code": "330521101001001", "kind": "event", "device_id": "00000000-0000-4000-8000-000000000000",
                      "item_id": "1", "conflict_id": "1", "incident_id": "00000000-0000-4000-8000-000000000001",
                      "notification_id": "1", "action": "register",
                      "upload_id": "00000000-0000-4000-8000-000000000002"}
SAMPLE_PATH_VALUES |= {"fmt": "csv", "job_id": "00000000-0000-4000-8000-000000000002"}  # exports (issue 7)


def _api_routes(app):
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS or rule.endpoint == "root" or rule.endpoint.startswith("dashboard."):
            continue  # the dashboard signs in with a session: tests/dashboard/test_pages.py checks its views
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda m: SAMPLE_PATH_VALUES.get(m.group(1), "x"), rule.rule)
            yield rule.endpoint, method, path


def test_every_non_public_endpoint_declares_a_permission(app):
    for endpoint, _method, _path in _api_routes(app):
        view = app.view_functions[endpoint]
        assert getattr(view, "required_permission", None) in PERMISSIONS, endpoint


def test_every_non_public_endpoint_needs_a_token(app, client):
    routes = list(_api_routes(app))
    assert len(routes) >= 10
    for endpoint, method, path in routes:
        response = client.open(path, method=method, json={} if method != "GET" else None)
        assert response.status_code == 401, (endpoint, method, response.status_code)
        assert response.get_json()["code"] == "auth.required"


@pytest.fixture
def users(app):
    world = make_world()
    users = {}
    for role in ROLES:
        area = world["county"] if role in ("admin", "supervisor") else world["township_a"]
        squad = world["squad_a"] if role.startswith("squad_") else None
        users[role] = make_user(f"user_{role}", role, area, squad=squad)
    users["world"] = world
    db.session.commit()
    return users


ROLE_ENDPOINTS = [
    ("GET", "/api/v1/me", "area.read"),
    ("GET", "/api/v1/areas", "area.read"),
    ("GET", "/api/v1/grids/cells", "grid.read"),
    ("GET", "/api/v1/grids/locate?lon=120.0005&lat=30.4995", "grid.read"),
    ("GET", "/api/v1/categories", "category.read"),
    ("GET", "/api/v1/teams", "squad.read"),
    ("GET", "/api/v1/users", "user.read"),
    ("GET", "/api/v1/incidents", "incident.read"),
    ("GET", "/api/v1/sync/quarantine", "sync.review"),
    ("GET", "/api/v1/sync/conflicts", "sync.review"),
    ("GET", "/api/v1/devices", "device.read"),
]


@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("method,path,permission", ROLE_ENDPOINTS)
def test_role_matrix(client, users, role, method, path, permission):
    response = client.open(path, method=method, headers=token_for(users[role]))
    if role in PERMISSIONS[permission]:
        assert response.status_code == 200, response.get_json()
    else:
        assert response.status_code == 403
        assert response.get_json()["code"] == "auth.forbidden"


def test_township_user_sees_nothing_of_the_other_township(client, users):
    world = users["world"]
    headers = token_for(users["duty_chief"])  # township A, may list users
    b_codes = {world["township_b"].code, world["village_b"].code}

    areas = client.get("/api/v1/areas", headers=headers).get_json()
    assert {a["code"] for a in areas} == {world["township_a"].code, world["village_a"].code}
    for code in b_codes | {world["county"].code}:
        response = client.get(f"/api/v1/areas/{code}", headers=headers)
        assert response.status_code == 404 and response.get_json()["code"] == "area.not_found"

    teams = client.get("/api/v1/teams", headers=headers).get_json()
    assert [t["township"]["code"] for t in teams] == [world["township_a"].code]

    listed = client.get("/api/v1/users", headers=headers).get_json()
    assert {u["username"] for u in listed} == {f"user_{r}" for r in ROLES if r not in ("admin", "supervisor")}

    cells = client.get("/api/v1/grids/cells", headers=headers).get_json()["features"]
    assert {f["id"] for f in cells} == {c.code for c in world["cells_a"]}
    response = client.get(f"/api/v1/grids/cells/{world['cells_b'][0].code}", headers=headers)
    assert response.status_code == 404


def test_county_user_sees_both_townships(client, users):
    world = users["world"]
    headers = token_for(users["admin"])
    areas = client.get("/api/v1/areas?level=township", headers=headers).get_json()
    assert [a["code"] for a in areas] == [world["township_a"].code, world["township_b"].code]
    villages = client.get(f"/api/v1/areas?parent={world['township_b'].code}", headers=headers).get_json()
    assert [a["code"] for a in villages] == [world["village_b"].code]
    assert len(client.get("/api/v1/teams", headers=headers).get_json()) == 2
