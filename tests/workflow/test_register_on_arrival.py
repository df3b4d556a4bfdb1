"""自动立案: a grid worker's synced report of an auto_register 小类 is registered in the push's transaction
and reaches the squad through the route job, with no dispatcher step; everything else still waits."""
import uuid

import pytest
from sqlalchemy import select

from gridapp.extensions import db
from gridapp.jobs.worker import run_worker
from gridapp.models import Category, Incident, IncidentEvent, OutboxMessage
from gridapp.services.categories import parse_catalogue_csv
from gridapp.services.workflow import AUTO_REGISTER_REASON
from sync.protocol import PROTOCOL_VERSION
from tests.factories import CELL, ORIGIN_A
from tests.sync.phones import phone
from tests.workflow.helpers import add_rule


def category(code):
    return db.session.scalar(select(Category).where(Category.code == code))


def centre(cell: int, east_m: float = 0.0) -> tuple[float, float]:
    west, north = ORIGIN_A
    col, row = cell % 3, cell // 3
    return west + CELL * (col + 0.5) + east_m / 100_000, north - CELL * (row + 0.5)


@pytest.fixture
def auto_world(world, receiver):
    category("06010").auto_register = True
    db.session.commit()
    add_rule(world, world["squad_a"], category=category("06010"), area=world["township_a"], auto=True)
    return world


def events(incident_id):
    return db.session.scalars(select(IncidentEvent).where(IncidentEvent.incident_id == uuid.UUID(incident_id))
                              .order_by(IncidentEvent.id)).all()


@pytest.mark.parametrize("batch_size", [1, 10], ids=["one by one", "one batch"])
def test_a_synced_report_is_registered_on_arrival_and_reaches_the_squad(app, tmp_path, auto_world, receiver,
                                                                        batch_size):
    worker = phone(app, tmp_path, auto_world["users"]["reporter"])
    first = worker.report("06010", "暴露垃圾", *centre(0))
    second = worker.report("06010", "暴露垃圾 另一处", *centre(4))
    duplicate = worker.report("06010", "同一处垃圾", *centre(0, east_m=5))  # within 50 m of `first`
    outside = worker.report("06010", "网格外", 100.0, 20.0)
    other = worker.report("06002", "店面无证装修", *centre(1))  # not auto_register
    assert worker.push(batch_size=batch_size) == {"applied": 5}

    db.session.expire_all()
    status = {i: db.session.get(Incident, uuid.UUID(i)).status for i in (first, second, duplicate, outside, other)}
    assert status == {first: "registered", second: "registered", duplicate: "reported", outside: "reported",
                      other: "reported"}
    register = events(first)[-1]
    assert (register.action, register.actor_id, register.actor_role, register.reason, register.to_status) == (
        "incident.register", None, "system", AUTO_REGISTER_REASON, "registered")
    assert db.session.scalar(select(OutboxMessage.kind).where(OutboxMessage.incident_id == uuid.UUID(first))) == "route"
    assert events(duplicate) == [] and events(other) == []

    run_worker(app, ["default"], burst=True)  # the route job was enqueued after the push's commit
    db.session.expire_all()
    dispatched = [db.session.get(Incident, uuid.UUID(i)) for i in (first, second)]
    assert [i.status for i in dispatched] == ["dispatched", "dispatched"]
    assert sorted(r["body"]["case_number"] for r in receiver.received) == sorted(i.case_number for i in dispatched)
    worker.pull()  # the phone sees what became of its reports
    assert worker.incidents()[first]["data"]["status"] == "dispatched"


def test_a_replayed_push_does_not_register_twice(app, tmp_path, auto_world, receiver):
    worker = phone(app, tmp_path, auto_world["users"]["reporter"])
    incident_id = worker.report("06010", "暴露垃圾", *centre(0))
    mutation = worker.outbox()[0]
    worker.push()
    batch = {"protocol_version": PROTOCOL_VERSION, "app_version": "1.0", "mutations": [mutation]}
    replay = worker._call("POST", "/api/v1/sync/mutations", batch)  # the answer was lost: the phone sends it again
    assert replay.body["results"][0]["status"] == "duplicate"
    db.session.expire_all()
    assert [e.action for e in events(incident_id)] == ["incident.register"]


def test_the_catalogue_file_sets_auto_register():
    header = ("standard,kind,code,name,major_code,major_name,register_condition,close_condition,time_limit,"
              "time_unit,auto_register\n")
    rows = parse_catalogue_csv(header + "S,事项,06010,暴露垃圾,06,市容环境类,发现,清理,4,工作时,是\n"
                                        "S,事项,06002,店面无证装修,06,市容环境类,发现,恢复,2,工作日,\n")
    assert [(r.code, r.auto_register) for r in rows] == [("06010", True), ("06002", False)]
    without = parse_catalogue_csv(header.replace(",auto_register", "") + "S,事项,06010,暴露垃圾,06,市容,发现,清理,4,工作时\n")
    assert without[0].auto_register is False
