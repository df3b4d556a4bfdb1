from sqlalchemy import text

from gridapp.extensions import db
from gridapp.models import ROLES, User
from gridapp.services.access import scope_prefix
from gridapp.services.grids import locate

TABLES = ["admin_areas", "grid_cells", "grid_cell_workers", "users", "enforcement_teams", "squads",
          "squad_areas", "categories", "category_conditions", "worker_scopes"]
# Rules are replaced on each load (new ids), so they are compared by content.
RULES = ("SELECT category_id, area_id, cell_code, squad_id, priority, is_fallback, auto_dispatch, note "
         "FROM responsibility_rules ORDER BY 1, 2, 3, 4")


def snapshot():
    tables = {t: db.session.execute(text(f"SELECT * FROM {t} ORDER BY 1, 2")).all() for t in TABLES}
    return {**tables, "rules": db.session.execute(text(RULES)).all()}


def test_demo_loads_idempotently(runner):
    result = runner.invoke(args=["demo", "load"])
    assert result.exit_code == 0, result.output
    first = snapshot()
    assert runner.invoke(args=["demo", "load"]).exit_code == 0
    assert snapshot() == first
    assert len(first["grid_cells"]) >= 300
    assert len(first["rules"]) == 6  # three per township, one of them the fallback
    assert db.session.execute(text("SELECT count(*) FROM admin_areas WHERE level = 'township'")).scalar() == 2


def test_demo_has_every_role_in_each_township_and_a_working_grid(runner):
    runner.invoke(args=["demo", "load"])
    users = db.session.query(User).all()
    for township in ("330521101", "330521102"):
        roles = {u.role for u in users if u.area.code == township}
        assert roles == set(ROLES), township
    worker = next(u for u in users if u.username == "qy_worker1")
    assert len(worker.cells) == 40
    # The demo grid has no topology faults: it went through the same import and its check.
    cell = worker.cells[0]
    centre = db.session.execute(text("SELECT ST_X(ST_Centroid(geom)), ST_Y(ST_Centroid(geom)) FROM grid_cells "
                                     "WHERE id = :id"), {"id": cell.id}).one()
    assert locate(scope_prefix(worker), *centre)["code"] == cell.code
