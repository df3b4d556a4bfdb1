"""Every code in the error catalogue, triggered for real, in the one problem+json shape."""
import inspect
import uuid

import pytest

from gridapp import create_app, errors
from gridapp.extensions import db
from gridapp.services.users import create_user
from tests.conftest import TEST_CONFIG
from tests.factories import make_user, make_world, token_for

PROBLEM_KEYS = {"type", "title", "status", "code", "message", "detail", "details"}


def catalogue_codes():
    return {cls.code for _, cls in inspect.getmembers(errors, inspect.isclass)
            if issubclass(cls, errors.AppError) and cls is not errors.AppError}


@pytest.fixture
def ctx(app):
    world = make_world()
    dispatcher = make_user("dispatcher", "dispatcher", world["township_a"])
    worker = make_user("worker", "grid_worker", world["township_a"])
    db.session.commit()
    return {"world": world, "dispatcher": token_for(dispatcher), "worker": token_for(worker)}


def _raise_conflict(ctx):
    with pytest.raises(errors.Conflict) as info:
        create_user("dispatcher", "dispatcher", ctx["world"]["township_a"], "long-enough-password")
    db.session.rollback()
    return info.value


# code → how to trigger it: an HTTP call returning a response, or a direct call returning the exception
# (for codes only the CLI and services raise; the CLI tests show their output).
TRIGGERS = {
    "bad_request": lambda c, x: c.post("/api/v1/auth/token", data="{", content_type="application/json"),
    "validation_error": lambda c, x: c.post("/api/v1/auth/token", json={}),
    "not_found": lambda c, x: c.get("/api/v1/nothing-here"),
    "method_not_allowed": lambda c, x: c.put("/api/v1/grids/locate", headers=x["dispatcher"]),
    "payload_too_large": lambda c, x: c.post("/api/v1/auth/token", data="x" * (17 * 1024 * 1024),
                                             content_type="application/json"),
    "unsupported_media_type": lambda c, x: c.post("/api/v1/auth/token", data="a=b", content_type="text/plain"),
    "conflict": lambda c, x: _raise_conflict(x),
    "service_unavailable": None,  # tested below with a database that is down
    "auth.required": lambda c, x: c.get("/api/v1/me"),
    "auth.invalid_credentials": lambda c, x: c.post("/api/v1/auth/token", json={"username": "x", "password": "y"}),
    "auth.forbidden": lambda c, x: c.get("/api/v1/users", headers=x["worker"]),
    "grid.not_found": lambda c, x: c.get("/api/v1/grids/locate?lon=121&lat=31", headers=x["dispatcher"]),
    "area.not_found": lambda c, x: c.get("/api/v1/areas/999999", headers=x["dispatcher"]),
    "category.not_found": lambda c, x: c.get("/api/v1/categories/event/99999", headers=x["dispatcher"]),
    "incident.not_found": lambda c, x: c.get(f"/api/v1/incidents/{uuid.uuid4()}", headers=x["dispatcher"]),
    "sync.device_token_required": lambda c, x: c.get("/api/v1/sync/changes", headers=x["worker"]),
    "sync.protocol_unsupported": None,  # tests/sync/test_pull_and_review.py
    "sync.cursor_invalid": None,  # tests/sync/test_scope_and_devices.py
    "sync.device_revoked": None,  # tests/sync/test_scope_and_devices.py
    "sync.device_draining": None,  # tests/sync/test_scope_and_devices.py
    "sync.review_item_not_found": None,  # tests/sync/test_pull_and_review.py
    "sync.review_item_closed": None,  # tests/sync/test_pull_and_review.py
    "workflow.invalid_transition": None,  # tests/workflow/test_workflow.py (each workflow code, per action)
    "workflow.reason_required": None,  # tests/workflow/test_workflow.py
    "workflow.not_assignee": None,  # tests/workflow/test_workflow.py
    "workflow.invalid_input": None,  # tests/workflow/test_workflow.py
    "grid.import_rejected": None,  # CLI: tests/cli/test_grid_import.py
    "category.invalid_catalogue": None,  # CLI: tests/cli/test_categories.py
    # Photos: tests/photos/test_uploads.py (tus, over a real socket) and test_downloads_and_workflow.py.
    "photo.tus_version": None,
    "photo.upload_not_found": None,
    "photo.offset_mismatch": None,
    "photo.upload_expired": None,
    "photo.checksum_mismatch": None,
    "photo.hash_mismatch": None,
    "photo.not_an_image": None,
    "photo.invalid_image": None,
    "photo.too_many_pixels": None,
    "photo.not_found": None,
    "photo.range_not_satisfiable": None,
    "photo.immutable": None,
    "workflow.after_photo_required": None,
    # The dashboard's form posts (also tests/dashboard/test_pages.py and test_browser.py).
    "dashboard.csrf_failed": lambda c, x: c.post("/dashboard/login", data={"username": "a", "password": "b"}),
    # Exports and the OGC API (issue 7).
    "export.not_found": lambda c, x: c.get(f"/api/v1/exports/{uuid.uuid4()}", headers=x["dispatcher"]),
    "export.link_invalid": lambda c, x: c.get("/api/v1/exports/download/forged.token"),
    "ogc.collection_not_found": lambda c, x: c.get("/api/v1/ogc/collections/roads", headers=x["dispatcher"]),
    "export.too_large": None,  # tests/exports/test_exports.py
    "export.reason_required": None,  # tests/exports/test_personal_data.py
    "export.not_ready": None,  # tests/exports/test_jobs.py
}


def test_every_catalogue_code_has_a_trigger():
    assert set(TRIGGERS) == catalogue_codes()


@pytest.mark.parametrize("code", [c for c, trigger in TRIGGERS.items() if trigger is not None])
def test_error_code(client, ctx, code):
    result = TRIGGERS[code](client, ctx)
    if isinstance(result, errors.AppError):
        assert result.code == code
        return
    assert result.mimetype == "application/problem+json"
    body = result.get_json()
    assert set(body) == PROBLEM_KEYS
    assert body["code"] == code and body["status"] == result.status_code and 400 <= result.status_code < 500
    assert body["message"] == body["detail"]


def test_payload_too_large_says_the_limit(client):
    response = client.post("/api/v1/auth/token", data="x" * (17 * 1024 * 1024), content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["details"]["limit_bytes"] == 16 * 1024 * 1024


def test_unexpected_error_is_500_without_traceback(app):
    fresh = create_app(TEST_CONFIG)

    @fresh.get("/boom")
    def boom():
        raise RuntimeError("secret internals /etc/passwd")

    response = fresh.test_client().get("/boom")
    assert response.status_code == 500
    body = response.get_json()
    assert body["code"] == "internal" and "secret" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)
    with fresh.app_context():
        db.engine.dispose()


def test_database_down_is_503_service_unavailable(app):
    down = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://gridapp:gridapp@127.0.0.1:1/x"})
    response = down.test_client().get("/api/v1/me", headers={"Authorization": "Bearer gat_anything"})
    assert response.status_code == 503
    assert response.get_json()["code"] == "service_unavailable"
    with down.app_context():
        db.engine.dispose()
