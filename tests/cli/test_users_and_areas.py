from sqlalchemy import select

from gridapp.extensions import db
from gridapp.models import AdminArea, User
from gridapp.services.passwords import verify_password
from tests.factories import make_world


def test_create_areas_then_user_with_password_from_stdin(runner, client):
    assert runner.invoke(args=["area", "create", "330521", "德清县", "--level", "county"]).exit_code == 0
    result = runner.invoke(args=["area", "create", "330521101", "乾元镇", "--level", "township", "--parent", "330521"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(args=["user", "create", "li", "--role", "dispatcher", "--area", "330521101",
                                 "--display-name", "李派遣"], input="a-long-password\n")
    assert result.exit_code == 0, result.output
    user = db.session.scalar(select(User).where(User.username == "li"))
    assert user.role == "dispatcher" and user.area.code == "330521101"
    assert verify_password(user.password_hash, "a-long-password") and "a-long-password" not in user.password_hash
    response = client.post("/api/v1/auth/token", json={"username": "li", "password": "a-long-password"})
    assert response.status_code == 201


def test_area_nesting_is_enforced(runner):
    runner.invoke(args=["area", "create", "330521", "德清县", "--level", "county"])
    for args in (["330522101", "别县镇", "--level", "township", "--parent", "330521"],
                 ["3305211", "短码", "--level", "township", "--parent", "330521"],
                 ["330521101", "无上级", "--level", "township"]):
        result = runner.invoke(args=["area", "create", *args])
        assert result.exit_code != 0 and "validation_error" in result.output, args
    assert db.session.scalar(select(AdminArea.code).where(AdminArea.level == "township")) is None


def test_user_create_refusals_write_nothing(runner):
    world = make_world()
    db.session.commit()
    cases = [
        (["a", "--role", "dispatcher", "--area", "330521101"], "short\n", "validation_error"),
        (["b", "--role", "squad_member", "--area", "330521101"], "long-password\n", "validation_error"),
        (["c", "--role", "grid_worker", "--area", "330521"], "long-password\n", "validation_error"),
        (["d", "--role", "dispatcher", "--area", world["village_a"].code], "long-password\n", "validation_error"),
        (["e", "--role", "dispatcher", "--area", "999999"], "long-password\n", "area.not_found"),
        (["f", "--role", "pilot", "--area", "330521101"], "long-password\n", "Invalid value"),
    ]
    for args, password, expected in cases:
        result = runner.invoke(args=["user", "create", *args], input=password)
        assert result.exit_code != 0 and expected in result.output, (args, result.output)
    assert db.session.scalars(select(User.username)).all() == []
    ok = runner.invoke(args=["user", "create", "g", "--role", "squad_member", "--area", "330521101", "--squad", "01"],
                       input="long-password\n")
    assert ok.exit_code == 0, ok.output
    dup = runner.invoke(args=["user", "create", "g", "--role", "dispatcher", "--area", "330521101"],
                        input="long-password\n")
    assert dup.exit_code != 0 and "conflict" in dup.output


def test_assign_cells(runner):
    world = make_world()
    runner.invoke(args=["user", "create", "w", "--role", "grid_worker", "--area", "330521101"], input="long-password\n")
    codes = [c.code for c in world["cells_a"][:2]]
    db.session.commit()
    result = runner.invoke(args=["user", "assign-cells", "w", *codes])
    assert result.exit_code == 0, result.output
    user = db.session.scalar(select(User).where(User.username == "w"))
    assert sorted(c.code for c in user.cells) == codes
    outside = runner.invoke(args=["user", "assign-cells", "w", world["cells_b"][0].code])
    assert outside.exit_code != 0 and "validation_error" in outside.output
