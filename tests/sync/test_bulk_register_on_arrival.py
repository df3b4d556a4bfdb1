"""自动立案 on the set-based push (sync/bulk.py): the same results, rows, register events and route outbox
messages as one by one (workflow.register_on_arrival), and nothing twice on a replay."""
import pytest
from sqlalchemy import select, text

from gridapp.extensions import db
from gridapp.models import Category, CategoryCondition
from tests.sync.phones import phone
from tests.sync.test_bulk_push import IN_CELL_0, push_both_ways, snapshot
from tests.sync.test_bulk_push import world as world  # noqa: F401 - the fixture

ARRIVAL_ROWS = {
    "events": """SELECT i.case_number, e.action, e.actor_id, e.actor_role, e.from_status, e.to_status, e.reason,
                        e.details FROM incident_events e JOIN incidents i ON i.id = e.incident_id ORDER BY 1, e.id""",
    "outbox": """SELECT i.case_number, o.kind, e.action, o.payload, o.processed_at, o.attempts FROM outbox_messages o
                 JOIN incidents i ON i.id = o.incident_id JOIN incident_events e ON e.id = o.event_id ORDER BY 1, o.id""",
    "cases": "SELECT case_number, status, version, condition_id FROM incidents ORDER BY 1",
}


def arrival_rows() -> dict:
    return {name: [tuple(r) for r in db.session.execute(text(sql))] for name, sql in ARRIVAL_ROWS.items()}


def auto_register(code="06010"):
    db.session.scalar(select(Category).where(Category.code == code)).auto_register = True
    db.session.commit()


def test_mixed_batch_registers_on_arrival_as_one_by_one(app, world, tmp_path, monkeypatch):  # noqa: F811
    auto_register()
    client = phone(app, tmp_path, world["worker"])
    one_by_one, set_based = push_both_ways(app, client, tmp_path, monkeypatch, lambda: (snapshot(), arrival_rows()))
    assert set_based == one_by_one
    results, (_, rows) = set_based
    registered = [c for c in rows["cases"] if c[1] == "registered"]
    # Most reports of the batch lie within 50 m of another (likely duplicates wait for a dispatcher).
    assert len(registered) == 2 and all(version >= 2 and condition for _, _, version, condition in registered)
    assert [e[1] for e in rows["events"]] == ["incident.register"] * 2 and [o[1] for o in rows["outbox"]] == ["route"] * 2
    assert 2 in {r.get("version") for r in results if r.get("case_number") in {c[0] for c in registered}}


def test_a_category_without_condition_1_is_left_to_the_one_by_one_path(app, world, tmp_path):  # noqa: F811
    auto_register()
    category_id = db.session.scalar(select(Category.id).where(Category.code == "06010"))
    db.session.execute(CategoryCondition.__table__.update().where(CategoryCondition.category_id == category_id,
                                                                  CategoryCondition.seq == 1).values(seq=9))
    db.session.commit()
    client = phone(app, tmp_path, world["worker"])
    client.report("06010", "no 立案条件 1", *IN_CELL_0)
    with pytest.raises(Exception):  # noqa: B017 - as before: the register action refuses, the push fails
        client.push()
    db.session.rollback()
    assert arrival_rows()["events"] == []
