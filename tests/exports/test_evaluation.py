"""综合评价 against a hand-computed fixture: cases with explicit event times, every formula checked.

October 2026 in Shanghai = [2026-09-30T16:00Z, 2026-10-31T16:00Z); judged as of the period's end.
Township A (squad_a):
  C1 registered 10-05 01:00, dispatched +1 h, result 10-06 09:00 (24 h), checked in 3 h, closed on time
  C2 registered 10-10 08:00, dispatched +3 h (late), result 10-12 11:00 (48 h), check failed after 30 h
     (late; 返工), result again, checked in 2 h, closed late
  C3 registered 10-15, dispatched, returned (wrong dispatch), dispatched again, parked; due 10-20 → 缓办
  C4 registered 10-20, dispatched, due 10-25, still open → overdue 160 h at the period's end
  C5 registered 10-28, dispatched, due 11-05 → not yet due (not in 应结案)
  C6 registered 09-28 → another period
  C7 self-handled 10-03 by the worker → closed on time
  C9 reported 10-04 and found invalid
Township B: C8 registered 10-02, dispatched by dispatcher_b in 1 h, closed on time.
"""
from datetime import UTC, datetime

import pytest

from gridapp.extensions import db
from gridapp.models import ROLES, IncidentEvent
from tests.exports.helpers import build_export_world, new_incident
from tests.factories import make_user


def at(month, day, hour=0, minute=0):
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


def ev(incident, action, when, actor, to_status="x", **details):
    db.session.add(IncidentEvent(incident_id=incident.id, action=f"incident.{action}", actor_id=actor.id if actor else None,
                                 actor_role=actor.role if actor else "system", from_status="x", to_status=to_status,
                                 details=details, created_at=when))


@pytest.fixture
def world(app):
    data = build_export_world(with_incidents=False)
    users = data["users"]
    worker, dispatcher = users["reporter"], users["dispatcher"]
    dispatcher_b = make_user("dispatcher_b", "dispatcher", data["township_b"])
    squad_a, squad_b = data["squad_a"], data["squad_b"]

    def case(received, due=None, squad=squad_a, township="a", status="handling"):
        incident = new_incident(data, township=township)
        incident.received_at, incident.due_at, incident.status = received, due, status
        incident.assigned_squad_id = squad.id if squad else None
        return incident

    c1 = case(at(10, 5), due=at(10, 8))
    ev(c1, "register", at(10, 5, 1), dispatcher)
    ev(c1, "dispatch", at(10, 5, 2), dispatcher)
    ev(c1, "submit_result", at(10, 6, 2), users["squad_member"])
    ev(c1, "request_check", at(10, 6, 10), dispatcher, task_user="reporter")
    ev(c1, "pass_check", at(10, 6, 13), worker, on_time=True)

    c2 = case(at(10, 10), due=at(10, 11))
    ev(c2, "register", at(10, 10, 8), dispatcher)
    ev(c2, "dispatch", at(10, 10, 11), dispatcher)
    ev(c2, "submit_result", at(10, 12, 11), users["squad_member"])
    ev(c2, "request_check", at(10, 12, 8 + 4), dispatcher, task_user="reporter")
    ev(c2, "fail_check", at(10, 13, 18), worker)
    ev(c2, "submit_result", at(10, 13, 19), users["squad_member"])
    ev(c2, "request_check", at(10, 13, 20), dispatcher, task_user="reporter")
    ev(c2, "pass_check", at(10, 13, 22), worker, on_time=False)

    c3 = case(at(10, 15), due=at(10, 20), status="parked")
    ev(c3, "register", at(10, 15, 1), dispatcher)
    ev(c3, "dispatch", at(10, 15, 1, 30), dispatcher)
    ev(c3, "return", at(10, 15, 5), users["squad_member"])
    ev(c3, "dispatch", at(10, 15, 6), dispatcher)
    ev(c3, "decide_request", at(10, 17), users["duty_chief"], to_status="parked", kind="park")

    c4 = case(at(10, 20), due=at(10, 25))
    ev(c4, "register", at(10, 20, 1), dispatcher)
    ev(c4, "dispatch", at(10, 20, 2), dispatcher)

    c5 = case(at(10, 28), due=at(11, 5))
    ev(c5, "register", at(10, 28, 1), dispatcher)
    ev(c5, "dispatch", at(10, 28, 2), dispatcher)

    c6 = case(at(9, 27), due=at(9, 30))
    ev(c6, "register", at(9, 28), dispatcher)

    c7 = case(at(10, 3), squad=None, status="closed")
    ev(c7, "self_handle", at(10, 3, 2), worker)

    c9 = case(at(10, 4), squad=None, status="invalid")
    ev(c9, "reject", at(10, 4, 3), dispatcher)

    c8 = case(at(10, 2), due=at(10, 6), squad=squad_b, township="b", status="closed")
    ev(c8, "register", at(10, 2, 1), dispatcher_b)
    ev(c8, "dispatch", at(10, 2, 2), dispatcher_b)
    ev(c8, "submit_result", at(10, 3), None)
    ev(c8, "request_check", at(10, 3, 1), None, task_user="worker_b")
    ev(c8, "pass_check", at(10, 3, 2), data["users"]["worker_b"], on_time=True)
    db.session.commit()
    data["cases"] = {"c4": c4}
    return data


def _by(rows, key, value):
    return next(r for r in rows if r[key] == value)


def test_monthly_figures_match_the_hand_computation(client, world):
    response = client.get("/api/v1/evaluation?month=2026-10", headers=world["headers"]["county_supervisor"])
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["period"]["start"] == "2026-10-01T00:00:00+08:00"
    a = _by(body["townships"], "code", "330521101")
    assert {k: a[k] for k in ("reported", "registered", "due", "parked", "closed", "closed_on_time", "overdue_open",
                              "handled", "reworked")} == {
        "reported": 7, "registered": 6, "due": 5, "parked": 1, "closed": 3, "closed_on_time": 2, "overdue_open": 1,
        "handled": 2, "reworked": 1}
    assert a["closure_rate"] == 75.0  # 3 / (5 − 1)
    assert a["on_time_closure_rate"] == 50.0  # 2 / (5 − 1)
    assert a["rework_rate"] == 50.0  # 1 / 2
    assert a["avg_handling_hours"] == 36.0  # (24 + 48) / 2
    b = _by(body["townships"], "code", "330521102")
    assert (b["closure_rate"], b["on_time_closure_rate"], b["rank"], a["rank"]) == (100.0, 100.0, 1, 2)

    squad_a = _by(body["squads"], "id", world["squad_a"].id)
    assert (squad_a["registered"], squad_a["due"], squad_a["parked"], squad_a["closed"]) == (5, 4, 1, 2)
    assert (squad_a["closure_rate"], squad_a["on_time_closure_rate"]) == (66.67, 33.33)

    worker = _by(body["grid_workers"], "username", "reporter")
    assert (worker["reported"], worker["valid_reports"], worker["valid_report_rate"]) == (7, 6, 85.71)
    assert (worker["checks_due"], worker["checks_done"], worker["checks_on_time"]) == (3, 3, 2)
    assert worker["on_time_check_rate"] == 66.67  # 按时核查率 = 2 / 3 (the failed check took 30 h)

    dispatcher = _by(body["dispatchers"], "username", "dispatcher")
    assert (dispatcher["dispatched"], dispatcher["dispatched_on_time"], dispatcher["returned"]) == (6, 5, 1)
    assert (dispatcher["accurate_dispatch_rate"], dispatcher["on_time_dispatch_rate"]) == (83.33, 83.33)

    assert [c["id"] for c in body["overdue_cases"]] == [str(world["cases"]["c4"].id)]
    assert body["overdue_cases"][0]["overdue_hours"] == 160.0
    assert body["total"]["registered"] == 7 and body["total"]["closure_rate"] == 80.0  # 4 / (6 − 1)


def test_filters_and_scope_apply_to_the_evaluation(client, world):
    township = client.get("/api/v1/evaluation?month=2026-10", headers=world["headers"]["supervisor"]).get_json()
    assert [t["code"] for t in township["townships"]] == ["330521101"]  # a township supervisor sees only theirs
    squad = client.get(f"/api/v1/evaluation?month=2026-10&squad={world['squad_b'].id}",
                       headers=world["headers"]["county_supervisor"]).get_json()
    assert [t["code"] for t in squad["townships"]] == ["330521102"]
    empty = client.get("/api/v1/evaluation?start=2026-01-01T00:00:00Z&end=2026-02-01T00:00:00Z",
                       headers=world["headers"]["county_supervisor"]).get_json()
    assert empty["total"]["closure_rate"] is None and empty["townships"] == []  # nothing to rate is not 0 %


def test_period_is_required_and_roles_are_checked(client, world):
    response = client.get("/api/v1/evaluation", headers=world["headers"]["county_supervisor"])
    assert response.status_code == 422 and "month" in response.get_json()["details"]["fields"]
    response = client.get("/api/v1/evaluation?month=2026-13", headers=world["headers"]["county_supervisor"])
    assert response.status_code == 422
    for role in ROLES:
        user = next((u for u in world["users"].values() if u.role == role), None)
        if user is None:
            continue
        status = client.get("/api/v1/evaluation?month=2026-10", headers=world["headers"][
            next(k for k, v in world["users"].items() if v is user)]).status_code
        assert status == (200 if role in ("dispatcher", "duty_chief", "squad_leader", "supervisor", "admin") else 403)


def test_monthly_report_xlsx_has_the_ranked_sheets(client, world, tmp_path):
    import openpyxl

    response = client.get("/api/v1/evaluation/report.xlsx?month=2026-10", headers=world["headers"]["county_supervisor"])
    assert response.status_code == 200
    path = tmp_path / "report.xlsx"
    path.write_bytes(response.get_data())
    book = openpyxl.load_workbook(path, read_only=True)
    assert book.sheetnames == ["乡镇（街道）排名", "中队排名", "网格员排名", "派遣员排名", "超期未结案件"]
    rows = list(book["乡镇（街道）排名"].iter_rows(values_only=True))
    assert rows[0][0] == "测试县 2026年10月 网格化管理运行情况通报"
    assert rows[2][:3] == (1, "330521102", "B镇") and rows[3][:3] == (2, "330521101", "A镇")
    assert rows[3][9:11] == (75.0, 50.0)
    overdue = list(book["超期未结案件"].iter_rows(values_only=True))
    assert overdue[2][0] == world["cases"]["c4"].case_number
    book.close()
    assert client.get("/api/v1/evaluation/report.doc?month=2026-10",
                      headers=world["headers"]["county_supervisor"]).status_code == 404
