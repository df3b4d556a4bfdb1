"""The case workflow through the API: the happy path with RQ jobs and a real webhook, and every refusal."""
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from gridapp.extensions import db
from gridapp.jobs.dispatch import escalate_overdue
from gridapp.jobs.worker import run_worker
from gridapp.models import ROLES, CaseRequest, Incident, IncidentEvent, IncidentNote, Notification, utcnow
from gridapp.services.workflow import ACTIONS
from tests.factories import token_for
from tests.workflow.helpers import act, report


def drain(app):
    """Run the queued jobs with a real RQ worker (burst), as the deployed worker would."""
    run_worker(app, ["default"], burst=True)
    db.session.expire_all()


def status(incident_id):
    db.session.expire_all()
    return db.session.get(Incident, incident_id).status


def test_the_seven_steps_end_to_end(app, client, world, receiver):
    users = world["users"]
    case = report(world)
    assert act(client, users["dispatcher"], case, "register").status_code == 200
    drain(app)  # routing job: no rule yet → the no-owner queue
    assert db.session.get(Incident, case).is_ownerless
    response = act(client, users["dispatcher"], case, "dispatch", squad_code="01")
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["incident"]["status"] == "dispatched" and body["incident"]["squad_code"] == "01"
    assert 0 < body["incident"]["seconds_left"]  # 暴露垃圾: 4 working hours
    drain(app)  # notification job → the squad's webhook
    assert len(receiver.received) == 1 and receiver.signature_ok(receiver.received[0])
    delivered = receiver.received[0]["body"]
    assert delivered["event"] == "incident.dispatched" and delivered["case_number"] == body["incident"]["case_number"]
    assert act(client, users["squad_member"], case, "accept").status_code == 200
    assert act(client, users["squad_member"], case, "submit_result", "清理完毕").status_code == 200
    drain(app)  # the check task goes to the reporter
    assert status(case) == "checking" and db.session.get(Incident, case).task_user_id == users["reporter"].id
    assert act(client, users["reporter"], case, "pass_check").status_code == 200
    assert status(case) == "closed"
    events = client.get(f"/api/v1/incidents/{case}/events", headers=token_for(users["dispatcher"])).get_json()
    assert [e["action"] for e in events] == [
        "incident.register", "incident.route", "incident.dispatch", "incident.accept", "incident.submit_result",
        "incident.request_check", "incident.pass_check"]
    assert [e["actor_role"] for e in events][:3] == ["dispatcher", "system", "dispatcher"]
    drain(app)  # nothing left: each job ran once
    assert len(receiver.received) == 1


@pytest.mark.parametrize("action", sorted(ACTIONS))
def test_roles_that_may_not_act_are_refused_and_nothing_changes(client, world, action):
    case = report(world)
    before = db.session.get(Incident, case).version
    for role, user in world["users"].items():
        base_role = user.role
        if base_role in ACTIONS[action].roles:
            continue
        response = act(client, user, case, action, "a reason")
        assert response.status_code == 403, (action, role, response.get_json())
        assert response.get_json()["code"] == "auth.forbidden"
    db.session.expire_all()
    assert db.session.get(Incident, case).version == before
    assert db.session.scalar(select(func.count()).select_from(IncidentEvent)) == 0
    assert set(ROLES) >= {u.role for u in world["users"].values()}


def _advance(client, world, case, to):
    users = world["users"]
    steps = {"registered": [("dispatcher", "register", None, {})],
             "dispatched": [("dispatcher", "dispatch", None, {"squad_code": "01"})],
             "handling": [("squad_member", "accept", None, {})],
             "handled": [("squad_member", "submit_result", "done", {})]}
    for status_, moves in steps.items():
        for role, action, reason, params in moves:
            assert act(client, users[role], case, action, reason, **params).status_code == 200
        if status_ == to:
            return


@pytest.mark.parametrize("action,role,at,code", [
    ("dispatch", "dispatcher", "reported", "workflow.invalid_transition"),
    ("accept", "squad_member", "registered", "workflow.invalid_transition"),
    ("register", "dispatcher", "dispatched", "workflow.invalid_transition"),
    ("pass_check", "reporter", "handling", "workflow.invalid_transition"),
    ("return", "squad_member", "dispatched", "workflow.reason_required"),
    ("reject", "dispatcher", "reported", "workflow.reason_required"),
    ("accept", "other_squad", "dispatched", "workflow.not_assignee"),
    ("dispatch", "dispatcher", "registered", "workflow.invalid_input"),
])
def test_invalid_actions_get_a_code_and_change_nothing(client, world, action, role, at, code):
    case = report(world)
    if at != "reported":
        _advance(client, world, case, at)
    db.session.expire_all()
    before = (db.session.get(Incident, case).status, db.session.get(Incident, case).version,
              db.session.scalar(select(func.count()).select_from(IncidentEvent)))
    response = act(client, world["users"][role], case, action)  # no reason, no params
    assert response.status_code in (409, 422) and response.get_json()["code"] == code
    db.session.expire_all()
    assert (db.session.get(Incident, case).status, db.session.get(Incident, case).version,
            db.session.scalar(select(func.count()).select_from(IncidentEvent))) == before


def test_other_township_and_unknown_cases_are_404(client, world):
    case = report(world)
    from tests.factories import make_user
    outsider = make_user("b_dispatcher", "dispatcher", world["township_b"])
    db.session.commit()
    assert act(client, outsider, case, "register").status_code == 404
    assert act(client, world["users"]["dispatcher"], uuid.uuid4(), "register").get_json()["code"] == "incident.not_found"
    assert act(client, world["users"]["dispatcher"], case, "teleport").get_json()["code"] == "workflow.invalid_input"


def test_return_then_redispatch(client, world):
    users = world["users"]
    case = report(world)
    _advance(client, world, case, "dispatched")
    assert act(client, users["squad_leader"], case, "return", "不属于本中队").status_code == 200
    assert status(case) == "returned" and db.session.get(Incident, case).assigned_squad_id is None
    assert act(client, users["dispatcher"], case, "dispatch", squad_code="02").status_code == 200
    assert act(client, users["other_squad"], case, "accept").status_code == 200


def test_extension_and_parking_move_the_deadline(client, world):
    users = world["users"]
    case = report(world)
    _advance(client, world, case, "handling")
    due = db.session.get(Incident, case).due_at
    assert act(client, users["squad_member"], case, "request_extension", "材料未到", amount=2).status_code == 200
    again = act(client, users["squad_member"], case, "request_park", "second request")
    assert again.status_code == 409
    no_reason = act(client, users["duty_chief"], case, "decide_request", approve=False)
    assert no_reason.get_json()["code"] == "workflow.reason_required"
    assert act(client, users["duty_chief"], case, "decide_request", approve=True).status_code == 200
    db.session.expire_all()
    extended = db.session.get(Incident, case).due_at
    assert extended > due
    assert act(client, users["squad_member"], case, "request_park", "等待天气").status_code == 200
    assert act(client, users["duty_chief"], case, "decide_request", approve=True).status_code == 200
    assert status(case) == "parked"
    assert db.session.get(Incident, case).paused_work_seconds is not None
    assert act(client, users["duty_chief"], case, "resume").status_code == 200
    assert status(case) == "handling"
    requests = db.session.scalars(select(CaseRequest).order_by(CaseRequest.id)).all()
    assert [(r.kind, r.state) for r in requests] == [("extension", "approved"), ("park", "approved")]


def test_failed_check_is_rework(app, client, world):
    users = world["users"]
    case = report(world)
    _advance(client, world, case, "handled")
    drain(app)
    assert act(client, users["neighbour"], case, "fail_check", "not mine").get_json()["code"] == "workflow.not_assignee"
    assert act(client, users["reporter"], case, "fail_check", "垃圾仍在").status_code == 200
    incident = db.session.get(Incident, case)
    assert incident.status == "handling" and incident.rework_count == 1


def test_verification_task_and_rejection(client, world):
    users = world["users"]
    case = report(world, cell=1)  # in the neighbour's cell
    assert act(client, users["dispatcher"], case, "request_verification").status_code == 200
    assert db.session.get(Incident, case).task_user_id == users["neighbour"].id
    assert act(client, users["neighbour"], case, "verify", exists=False).get_json()["code"] == "workflow.reason_required"
    assert act(client, users["neighbour"], case, "verify", "现场无垃圾", exists=False).status_code == 200
    assert status(case) == "invalid"


def test_self_handled_by_the_reporter(client, world):
    case = report(world)
    assert act(client, world["users"]["neighbour"], case, "self_handle", "x").get_json()["code"] == "workflow.not_assignee"
    assert act(client, world["users"]["reporter"], case, "self_handle", "随手清理").status_code == 200
    incident = db.session.get(Incident, case)
    assert incident.status == "closed" and incident.is_self_handled


def test_merge_into_a_master_case(client, world):
    users = world["users"]
    master, duplicate = report(world), report(world, description="same garbage")
    db.session.add(IncidentNote(id=uuid.uuid4(), incident_id=duplicate, author_id=users["reporter"].id, text="近景"))
    db.session.commit()
    assert act(client, users["dispatcher"], duplicate, "merge", master_id=str(duplicate)).status_code == 422
    assert act(client, users["dispatcher"], duplicate, "merge", master_id=str(master)).status_code == 200
    assert status(duplicate) == "duplicate"
    assert [n.text for n in db.session.get(Incident, master).notes] == ["近景"]


def test_supervision_and_escalation(app, client, world, receiver):
    users = world["users"]
    case = report(world)
    assert act(client, users["duty_chief"], case, "supervise", "领导关注", level=2).status_code == 200
    _advance(client, world, case, "handling")
    incident = db.session.get(Incident, case)
    incident.due_at = utcnow() + timedelta(minutes=30)
    db.session.commit()
    assert escalate_overdue() == {"due_soon": 1, "overdue": 0}
    assert escalate_overdue() == {"due_soon": 0, "overdue": 0}  # once
    incident = db.session.get(Incident, case)
    incident.due_at = utcnow() - timedelta(minutes=1)
    db.session.commit()
    assert escalate_overdue() == {"due_soon": 0, "overdue": 1}
    assert escalate_overdue() == {"due_soon": 0, "overdue": 0}
    drain(app)
    assert {r["body"]["event"] for r in receiver.received} >= {"incident.due_soon", "incident.overdue"}
    assert db.session.get(Incident, case).supervision_level == 2
    assert db.session.scalar(select(func.count()).select_from(Notification).where(Notification.state == "sent")) >= 3


USER_OF_ROLE = {"dispatcher": "dispatcher", "duty_chief": "duty_chief", "squad_member": "squad_member",
                "squad_leader": "squad_leader", "grid_worker": "reporter"}
# What each action needs first (status reached through the API) and what it is sent with.
SETUP = {
    "request_verification": ("reported", {}), "verify": ("verifying", {"exists": True}),
    "register": ("reported", {}), "reject": ("reported", {}), "merge": ("reported", {"master": True}),
    "dispatch": ("registered", {"squad_code": "01"}), "return": ("dispatched", {}), "accept": ("dispatched", {}),
    "request_extension": ("handling", {"amount": 1}), "request_park": ("handling", {}),
    "decide_request": ("requested", {"approve": True}), "resume": ("parked", {}),
    "submit_result": ("handling", {}), "request_check": ("handled", {}), "pass_check": ("checking", {}),
    "fail_check": ("checking", {}), "self_handle": ("reported", {}), "supervise": ("reported", {"level": 1}),
}


def _reach(client, world, case, status_):
    users = world["users"]
    if status_ == "verifying":
        assert act(client, users["dispatcher"], case, "request_verification").status_code == 200
    elif status_ in ("requested", "parked"):
        _advance(client, world, case, "handling")
        assert act(client, users["squad_member"], case, "request_park", "wait").status_code == 200
        if status_ == "parked":
            assert act(client, users["duty_chief"], case, "decide_request", approve=True).status_code == 200
    elif status_ == "checking":
        _advance(client, world, case, "handled")
        assert act(client, users["dispatcher"], case, "request_check").status_code == 200
    elif status_ != "reported":
        _advance(client, world, case, status_)


@pytest.mark.parametrize("action,role", [(a, r) for a in sorted(ACTIONS) for r in sorted(ACTIONS[a].roles)
                                         if r in USER_OF_ROLE])
def test_every_allowed_role_can_take_every_action(client, world, action, role):
    case = report(world)
    status_, params = SETUP[action][0], dict(SETUP[action][1])
    _reach(client, world, case, status_)
    if params.pop("master", False):
        params["master_id"] = str(report(world))
    response = act(client, world["users"][USER_OF_ROLE[role]], case, action, "a reason", **params)
    assert response.status_code == 200, (action, role, response.get_json())
    event = response.get_json()["event"]
    assert event["action"] == f"incident.{action}" and event["actor_role"] == role


def test_escalation_works_through_a_backlog_in_batches(client, world, monkeypatch):
    from gridapp.jobs import dispatch as dispatch_jobs
    monkeypatch.setattr(dispatch_jobs, "ESCALATION_BATCH", 2)
    cases = [report(world, description=f"case {i}") for i in range(5)]
    for case in cases:
        _advance(client, world, case, "dispatched")
    db.session.execute(Incident.__table__.update().values(due_at=utcnow() - timedelta(minutes=5)))
    db.session.commit()
    assert escalate_overdue() == {"due_soon": 0, "overdue": 5}
    assert escalate_overdue() == {"due_soon": 0, "overdue": 0}
    overdue_events = db.session.scalars(select(IncidentEvent).where(IncidentEvent.action == "incident.overdue")).all()
    assert sorted(e.incident_id for e in overdue_events) == sorted(cases)
