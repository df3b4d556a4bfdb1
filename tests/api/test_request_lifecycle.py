"""How a request ends (COMMIT for a read that changed nothing, else ROLLBACK), who is asking (the principal
read per request) and the Server-Timing header."""
import re

import pytest
from flask import g
from sqlalchemy import event, select, text

from gridapp import create_app
from gridapp.api.security import require
from gridapp.extensions import db
from gridapp.models import User
from tests.conftest import TEST_CONFIG
from tests.factories import CELL, ORIGIN_A, make_user, make_world, token_for

SERVER_TIMING = re.compile(r"^app;dur=\d+\.\d{3}$")


@pytest.fixture
def world(app):
    world = make_world(cols=3, rows=2)
    world["dispatcher_a"] = make_user("dispatcher_a", "dispatcher", world["township_a"])
    world["supervisor"] = make_user("supervisor", "supervisor", world["county"])
    db.session.commit()
    return world


@pytest.fixture
def fresh(app):
    """An app whose requests push their own app context, as in production (every request through the
    `app` fixture shares its one context, so the end of a request never ends that session).

    `fresh.ended` lists how each transaction ended, COMMIT or ROLLBACK.
    """
    fresh = create_app(TEST_CONFIG)
    fresh.ended = []
    with fresh.app_context():
        engine = db.engine
    event.listen(engine, "commit", lambda conn: fresh.ended.append("COMMIT"))
    event.listen(engine, "rollback", lambda conn: fresh.ended.append("ROLLBACK"))
    yield fresh
    with fresh.app_context():
        db.engine.dispose()


def _inside_a():
    west, north = ORIGIN_A
    return f"/api/v1/grids/locate?lon={west + CELL * 1.5!r}&lat={north - CELL * 0.5!r}"


def test_a_read_request_ends_with_commit_and_keeps_prepared_statements(fresh, world):
    client, headers = fresh.test_client(), token_for(world["dispatcher_a"])
    for _ in range(8):  # psycopg prepares a statement on its 5th use on a connection, forgets it at ROLLBACK
        fresh.ended.clear()
        response = client.get(_inside_a(), headers=headers)
        assert response.status_code == 200 and response.get_json()["code"] == world["cells_a"][1].code
        assert fresh.ended == ["COMMIT"]
    with fresh.app_context():  # the pool's one connection, the one the requests used
        prepared = db.session.execute(text("SELECT statement FROM pg_prepared_statements")).scalars().all()
    assert any("grid_locate" in statement for statement in prepared)
    assert any("token_hash" in statement for statement in prepared)


def test_errors_and_writes_end_with_rollback(fresh, world):
    client, headers = fresh.test_client(), token_for(world["dispatcher_a"])
    west, north = ORIGIN_A
    fresh.ended.clear()
    outside = client.get(f"/api/v1/grids/locate?lon={west - CELL!r}&lat={north!r}", headers=headers)
    assert outside.status_code == 404 and fresh.ended == ["ROLLBACK"]
    fresh.ended.clear()
    assert client.get("/api/v1/me", headers={"Authorization": "Bearer gat_unknown"}).status_code == 401
    assert fresh.ended == ["ROLLBACK"]
    fresh.ended.clear()
    refused = client.post("/api/v1/auth/token", json={"username": "dispatcher_a", "password": "wrong-password"})
    assert refused.status_code == 401 and fresh.ended == ["ROLLBACK"]


def test_a_read_request_that_changed_something_or_raised_commits_nothing(fresh, world):
    user_id = world["dispatcher_a"].id

    @fresh.get("/test/unflushed-change")
    def unflushed_change():
        db.session.get(User, user_id).display_name = "changed on a GET"
        return "ok"

    @fresh.get("/test/flushed-then-raised")
    def flushed_then_raised():
        db.session.get(User, user_id).display_name = "changed on a GET"
        db.session.flush()
        raise RuntimeError("after a write")

    client = fresh.test_client()
    fresh.ended.clear()
    assert client.get("/test/unflushed-change").status_code == 200
    assert "COMMIT" not in fresh.ended
    assert client.get("/test/flushed-then-raised").status_code == 500
    assert "COMMIT" not in fresh.ended
    db.session.expire_all()
    assert db.session.scalar(select(User.display_name).where(User.id == user_id)) == "dispatcher_a"


def test_each_request_acts_for_its_own_token(client, world):
    # The `client` fixture's requests share one app context: the user of the previous request must not stick.
    for user in (world["dispatcher_a"], world["supervisor"], world["dispatcher_a"]):
        me = client.get("/api/v1/me", headers=token_for(user)).get_json()
        assert me["username"] == user.username


def test_a_user_gone_between_authentication_and_use_is_refused(fresh, world):
    @fresh.get("/test/user-deleted-mid-request")
    @require("area.read")
    def user_deleted_mid_request():
        users = User.__table__
        db.session.execute(users.delete().where(users.c.id == g.principal.user_id))
        return {"username": g.user.username}  # g.user loads here, and finds no row

    response = fresh.test_client().get("/test/user-deleted-mid-request", headers=token_for(world["dispatcher_a"]))
    assert response.status_code == 401 and response.get_json()["code"] == "auth.required"
    db.session.expire_all()
    assert db.session.get(User, world["dispatcher_a"].id) is not None  # the refused request was rolled back


def test_a_disabled_user_is_refused_on_the_next_request(client, world):
    headers = token_for(world["dispatcher_a"])
    assert client.get(_inside_a(), headers=headers).status_code == 200
    world["dispatcher_a"].is_active = False
    db.session.commit()
    refused = client.get(_inside_a(), headers=headers)
    assert refused.status_code == 401 and refused.get_json()["code"] == "auth.required"


def test_responses_say_how_long_the_app_took(client, world):
    answers = [client.get(_inside_a(), headers=token_for(world["dispatcher_a"])),
               client.get("/api/v1/me"), client.get("/dashboard/login")]
    assert [a.status_code for a in answers] == [200, 401, 200]
    for answer in answers:
        assert SERVER_TIMING.match(answer.headers["Server-Timing"]), answer.headers.get("Server-Timing")


def test_server_timing_can_be_turned_off(app):
    quiet = create_app({**TEST_CONFIG, "SERVER_TIMING": False})
    response = quiet.test_client().get("/api/v1/me")
    assert response.status_code == 401 and "Server-Timing" not in response.headers
    with quiet.app_context():
        db.engine.dispose()
