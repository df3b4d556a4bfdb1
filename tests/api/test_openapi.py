"""The OpenAPI document is valid, covers every API route, and matches what the endpoints return."""
import re

import pytest
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate

from gridapp.api import PUBLIC_ENDPOINTS
from gridapp.extensions import db
from gridapp.services.categories import import_catalogue, parse_catalogue_csv
from gridapp.services.demo import DEFAULT_CATALOGUE
from tests.factories import PASSWORD, make_user, make_world, token_for


@pytest.fixture
def spec(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_document_is_valid_openapi_3(spec):
    assert spec["openapi"].startswith("3.")
    validate(spec)


def test_every_route_is_documented_with_its_security(app, spec):
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    for rule in app.url_map.iter_rules():
        if rule.endpoint in ("static", "api-docs.openapi_json", "root") or rule.endpoint.startswith("dashboard."):
            continue  # the dashboard's HTML pages are not the API (docs/dashboard.md)
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method.lower()) in documented, (path, method)
            operation = spec["paths"][path][method.lower()]
            if rule.endpoint in PUBLIC_ENDPOINTS:
                assert operation.get("security") == [], path
            else:
                assert "security" not in operation, path  # inherits the global bearerAuth
    assert spec["security"] == [{"bearerAuth": []}]


def _resolve(node, spec):
    """Inline $refs and forbid undeclared properties, so an undocumented field fails validation."""
    if isinstance(node, list):
        return [_resolve(item, spec) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        return _resolve(spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]], spec)
    resolved = {key: _resolve(value, spec) for key, value in node.items()}
    if "properties" in resolved:
        resolved.setdefault("additionalProperties", False)
    return resolved


def test_responses_match_the_document(client, spec):
    world = make_world()
    user = make_user("chief", "duty_chief", world["township_a"], phone="13800001111")
    import_catalogue(parse_catalogue_csv(DEFAULT_CATALOGUE.read_text(encoding="utf-8")))
    db.session.commit()
    headers = token_for(user)
    cell = world["cells_a"][0].code
    cases = [
        ("/api/v1/me", "/api/v1/me", "get", 200),
        ("/api/v1/users", "/api/v1/users", "get", 200),
        ("/api/v1/areas", "/api/v1/areas", "get", 200),
        (f"/api/v1/areas/{world['township_a'].code}", "/api/v1/areas/{code}", "get", 200),
        ("/api/v1/teams", "/api/v1/teams", "get", 200),
        ("/api/v1/categories", "/api/v1/categories", "get", 200),
        ("/api/v1/categories/event/06010", "/api/v1/categories/{kind}/{code}", "get", 200),
        ("/api/v1/grids/cells?limit=2", "/api/v1/grids/cells", "get", 200),
        (f"/api/v1/grids/cells/{cell}", "/api/v1/grids/cells/{code}", "get", 200),
        ("/api/v1/grids/locate?lon=120.0005&lat=30.4995", "/api/v1/grids/locate", "get", 200),
        ("/api/v1/grids/locate?lon=121&lat=31", "/api/v1/grids/locate", "get", 404),
        ("/healthz", "/healthz", "get", 503),  # no worker runs in this test
    ]
    for url, path, method, status in cases:
        response = client.open(url, method=method, headers=headers)
        assert response.status_code == status, url
        content = spec["paths"][path][method]["responses"][str(status)]["content"]
        assert response.mimetype in content, (url, response.mimetype, list(content))
        schema = _resolve(content[response.mimetype]["schema"], spec)
        OAS30Validator(schema).validate(response.get_json())


def test_token_response_matches_the_document(client, spec):
    world = make_world()
    make_user("chief", "duty_chief", world["township_a"])
    db.session.commit()
    response = client.post("/api/v1/auth/token", json={"username": "chief", "password": PASSWORD})
    content = spec["paths"]["/api/v1/auth/token"]["post"]["responses"]["201"]["content"]
    OAS30Validator(_resolve(content["application/json"]["schema"], spec)).validate(response.get_json())
