from sqlalchemy import text

from gridapp.extensions import db
from gridapp.models import ROLES, User
from gridapp.services.access import scope_prefix
from gridapp.services.grids import locate

TABLES = ["admin_areas", "grid_cells", "grid_cell_workers", "users", "enforcement_teams", "squads",
          "squad_areas", "categories", "category_conditions", "worker_scopes", "incidents", "incident_events",
          "incident_photos"]
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


def test_demo_cases_sit_at_every_stage_with_a_full_history(runner):
    from gridapp.services.demo import CASES_PER_TOWNSHIP

    assert runner.invoke(args=["demo", "load"]).exit_code == 0
    by_status = dict(db.session.execute(text("SELECT status, count(*) FROM incidents GROUP BY status")).all())
    assert set(by_status) == {"reported", "registered", "dispatched", "handling", "checking", "closed"}
    assert sum(by_status.values()) == 2 * CASES_PER_TOWNSHIP
    # Every case is in a cell of its reporter's village, and a closed case went through every step.
    misplaced = db.session.execute(text("""
        SELECT count(*) FROM incidents i JOIN grid_cell_workers w ON w.cell_id = i.cell_id
        WHERE w.user_id <> i.reporter_id""")).scalar()
    assert misplaced == 0
    closed = db.session.execute(text("SELECT id FROM incidents WHERE status = 'closed' LIMIT 1")).scalar()
    actions = db.session.execute(text("SELECT action FROM incident_events WHERE incident_id = :id ORDER BY id"),
                                 {"id": closed}).scalars().all()
    assert actions == [f"incident.{a}" for a in ("register", "dispatch", "accept", "submit_result", "request_check",
                                                 "pass_check")]


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
