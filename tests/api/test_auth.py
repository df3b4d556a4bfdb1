from datetime import timedelta

from sqlalchemy import func, select

from gridapp.extensions import db
from gridapp.models import ApiToken, utcnow
from tests.factories import PASSWORD, make_user, make_world, token_for


def _login(client, username, password=PASSWORD):
    return client.post("/api/v1/auth/token", json={"username": username, "password": password})


def test_token_for_valid_credentials_then_me(client):
    world = make_world()
    make_user("worker", "grid_worker", world["township_a"], cells=world["cells_a"][:2], phone="13812345678")
    db.session.commit()
    response = _login(client, "worker")
    assert response.status_code == 201
    body = response.get_json()
    assert body["token_type"] == "Bearer" and body["access_token"].startswith("gat_")
    me = client.get("/api/v1/me", headers={"Authorization": f"Bearer {body['access_token']}"}).get_json()
    assert me["username"] == "worker" and me["role"] == "grid_worker" and me["role_name"] == "网格员"
    assert me["area"] == {"code": world["township_a"].code, "name": "A镇"}
    assert me["cell_codes"] == sorted(c.code for c in world["cells_a"][:2])
    assert me["phone_masked"] == "138****5678"
    # Only the token's hash is stored.
    assert db.session.scalar(select(ApiToken.token_hash)) != body["access_token"]


def test_wrong_password_unknown_user_and_disabled_user_get_the_same_answer(client):
    world = make_world()
    make_user("worker", "grid_worker", world["township_a"])
    disabled = make_user("gone", "dispatcher", world["township_a"])
    disabled.is_active = False
    db.session.commit()
    for username, password in (("worker", "wrong-password"), ("nobody", PASSWORD), ("gone", PASSWORD)):
        response = _login(client, username, password)
        assert response.status_code == 401
        assert response.mimetype == "application/problem+json"
        assert response.get_json()["code"] == "auth.invalid_credentials"
    assert db.session.scalar(select(func.count()).select_from(ApiToken)) == 0


def test_token_request_validation(client):
    for body in ({}, {"username": "x"}, {"username": "", "password": "x"}, {"username": 5, "password": "x"}):
        response = client.post("/api/v1/auth/token", json=body)
        assert response.status_code == 422
        assert response.get_json()["code"] == "validation_error"
    response = client.post("/api/v1/auth/token", data="{not json", content_type="application/json")
    assert response.status_code == 400 and response.get_json()["code"] == "bad_request"


def test_expired_revoked_and_malformed_tokens_are_refused(client):
    world = make_world()
    user = make_user("dispatcher", "dispatcher", world["township_a"])
    headers = token_for(user)
    assert client.get("/api/v1/me", headers=headers).status_code == 200

    assert client.delete("/api/v1/auth/token", headers=headers).status_code == 204
    revoked = client.get("/api/v1/me", headers=headers)
    assert revoked.status_code == 401 and revoked.get_json()["code"] == "auth.required"

    headers = token_for(user)
    db.session.execute(ApiToken.__table__.update().values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    assert client.get("/api/v1/me", headers=headers).get_json()["code"] == "auth.required"

    for value in ("", "Bearer", "Bearer gat_unknown", "Basic abc", "gat_x", "Bearer not-our-token"):
        response = client.get("/api/v1/me", headers={"Authorization": value})
        assert response.status_code == 401 and response.get_json()["code"] == "auth.required", value


def test_disabling_a_user_kills_their_tokens(client):
    world = make_world()
    user = make_user("dispatcher", "dispatcher", world["township_a"])
    headers = token_for(user)
    user.is_active = False
    db.session.commit()
    assert client.get("/api/v1/me", headers=headers).status_code == 401


def test_non_json_body_is_415(client):
    response = client.post("/api/v1/auth/token", data="username=x", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415 and response.get_json()["code"] == "unsupported_media_type"
