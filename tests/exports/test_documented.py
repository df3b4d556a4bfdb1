"""The new JSON answers match the OpenAPI document (undocumented fields fail), and error answers are listed."""
from openapi_schema_validator import OAS30Validator

from tests.api.test_openapi import _resolve


def test_new_json_responses_match_the_document(client, data):
    spec = client.get("/api/v1/openapi.json").get_json()
    supervisor = data["headers"]["supervisor"]
    job = client.post("/api/v1/exports", json={"layer": "cells", "format": "csv"}, headers=supervisor)
    cases = [
        ("/api/v1/incidents", "/api/v1/incidents", "get", 200, None),
        (f"/api/v1/incidents/{data['incidents'][0].id}/party", "/api/v1/incidents/{incident_id}/party", "put", 200,
         {"phone": "13900000000"}),
        ("/api/v1/evaluation?month=2026-11", "/api/v1/evaluation", "get", 200, None),
        ("/api/v1/warnings", "/api/v1/warnings", "get", 200, None),
        (f"/api/v1/exports/{job.get_json()['id']}", "/api/v1/exports/{job_id}", "get", 200, None),
        ("/api/v1/exports/incidents.csv?unmasked=true", "/api/v1/exports/incidents.{fmt}", "get", 422, None),
    ]
    assert job.status_code == 202
    content = spec["paths"]["/api/v1/exports"]["post"]["responses"]["202"]["content"]["application/json"]
    OAS30Validator(_resolve(content["schema"], spec)).validate(job.get_json())
    for url, path, method, status, body in cases:
        headers = data["headers"]["dispatcher"] if method == "put" else supervisor
        response = client.open(url, method=method, headers=headers, json=body)
        assert response.status_code == status, (url, response.get_json())
        content = spec["paths"][path][method]["responses"][str(status)]["content"]
        assert response.mimetype in content, (url, response.mimetype, list(content))
        OAS30Validator(_resolve(content[response.mimetype]["schema"], spec)).validate(response.get_json())
