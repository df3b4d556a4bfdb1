"""Routing by the responsibility list, its import, duplicates, the calendar import, and delivery to squads."""
from datetime import date

import pytest
from openpyxl import Workbook
from rq.registry import ScheduledJobRegistry
from sqlalchemy import event, select, update

from gridapp.errors import WorkflowInputInvalid
from gridapp.extensions import db
from gridapp.jobs import dispatch, queue
from gridapp.jobs.dispatch import DELIVERY_INTERVALS, _notifications, deliver_notification, process_outbox_message
from gridapp.jobs.worker import run_worker
from gridapp.models import AuditEvent, CalendarDay, Category, Incident, Notification, OutboxMessage, ResponsibilityRule
from gridapp.services.squads import ensure_squad
from gridapp.services.workflow import work_calendar
from tests.factories import token_for
from tests.workflow.helpers import WebhookReceiver, act, add_rule, point_squad_at, report


def garbage(world):
    return db.session.scalar(select(Category).where(Category.code == "06010"))


def routed(client, world, case):
    return client.get(f"/api/v1/dispatch/incidents/{case}/route", headers=token_for(world["users"]["dispatcher"])).get_json()


def test_most_specific_place_then_priority_then_category_then_fallback(client, world):
    squad1, squad2 = world["squad_a"], world["squad2"]
    case = report(world)  # category 06010 in cell 0
    assert routed(client, world, case)["rule_id"] is None
    fallback = add_rule(world, squad2, area=world["township_a"], fallback=True)
    assert routed(client, world, case)["rule_id"] == fallback.id
    township_any = add_rule(world, squad2, area=world["township_a"])
    assert routed(client, world, case)["rule_id"] == township_any.id  # any real rule beats the fallback
    township_cat = add_rule(world, squad1, category=garbage(world), area=world["township_a"], priority=100)
    assert routed(client, world, case)["rule_id"] == township_cat.id  # same place and priority: the category rule
    urgent = add_rule(world, squad2, area=world["township_a"], priority=10)
    assert routed(client, world, case)["rule_id"] == urgent.id  # lower priority number wins at the same place
    village = add_rule(world, squad1, area=world["village_a"], priority=500)
    assert routed(client, world, case)["rule_id"] == village.id  # a narrower place wins over priority
    cell = add_rule(world, squad2, cell_code=world["cells_a"][0].code, priority=900)
    explained = routed(client, world, case)
    assert explained["rule_id"] == cell.id and explained["squad_code"] == "02"
    assert "cell" in explained["explanation"]
    other_cell_case = report(world, cell=4)
    assert routed(client, world, other_cell_case)["rule_id"] == village.id


def test_auto_dispatch_rule_dispatches_through_the_job(app, client, world):
    receiver = WebhookReceiver()
    try:
        point_squad_at(world["squad_a"], receiver)
        add_rule(world, world["squad_a"], category=garbage(world), area=world["township_a"], auto=True)
        case = report(world)
        act(client, world["users"]["dispatcher"], case, "register")
        run_worker(app, ["default"], burst=True)
        db.session.expire_all()
        incident = db.session.get(Incident, case)
        assert incident.status == "dispatched" and incident.squad.code == "01" and not incident.is_ownerless
        assert [r["body"]["case_number"] for r in receiver.received] == [incident.case_number]
    finally:
        receiver.close()


def _write_rules(tmp_path, rows, xlsx=False):
    header = ["category_code", "place_code", "squad_code", "priority", "fallback", "auto_dispatch", "note"]
    if xlsx:
        book = Workbook()
        book.active.append(header)
        for row in rows:
            book.active.append(row)
        path = tmp_path / "rules.xlsx"
        book.save(path)
        return path
    path = tmp_path / "rules.csv"
    path.write_text("\n".join(",".join(map(str, r)) for r in [header, *rows]) + "\n", encoding="utf-8")
    return path


def test_route_dispatch_notify_and_first_delivery_run_in_one_job(app, client, world, receiver):
    """A queue round trip per step would triple the latency: the route job runs the messages it creates."""
    add_rule(world, world["squad_a"], category=garbage(world), area=world["township_a"], auto=True)
    case = report(world)
    act(client, world["users"]["dispatcher"], case, "register")
    route = db.session.scalar(select(OutboxMessage).where(OutboxMessage.incident_id == case))
    assert process_outbox_message(route.id) == "done"  # this job alone, no worker
    db.session.expire_all()
    messages = db.session.scalars(select(OutboxMessage).where(OutboxMessage.incident_id == case)
                                  .order_by(OutboxMessage.id)).all()
    assert [(m.kind, m.processed_at is not None, m.attempts) for m in messages] == [("route", True, 1), ("notify", True, 1)]
    assert [r["body"]["case_number"] for r in receiver.received] == [db.session.get(Incident, case).case_number]
    assert process_outbox_message(route.id) == "skipped"
    assert len(receiver.received) == 1


def test_a_failed_first_delivery_continues_the_backoff_in_its_own_job(app, client, world, receiver):
    receiver.failures_left = 1
    case = report(world)
    act(client, world["users"]["dispatcher"], case, "register")
    act(client, world["users"]["dispatcher"], case, "dispatch", squad_code="01")
    notify = db.session.scalar(select(OutboxMessage).where(OutboxMessage.kind == "notify"))
    assert process_outbox_message(notify.id) == "done"
    notification = db.session.scalar(select(Notification))
    assert (notification.state, notification.attempts, receiver.received) == ("pending", 1, [])
    registry = ScheduledJobRegistry(queue=queue())
    [job_id] = registry.get_job_ids()
    delay = registry.get_scheduled_time(job_id).timestamp() - notification.enqueued_at.timestamp()
    assert DELIVERY_INTERVALS[0] - 1 < delay < DELIVERY_INTERVALS[0] + 1  # the first backoff, not at once
    job = queue().fetch_job(job_id)
    assert job.retries_left == len(DELIVERY_INTERVALS) - 1
    registry.remove(job)
    queue().enqueue_job(job)  # as the scheduler does when it is due
    run_worker(app, ["default"], burst=True)
    db.session.expire_all()
    assert db.session.get(Notification, notification.id).state == "sent"
    assert receiver.keys() == [notification.idempotency_key]


def test_rules_import_from_xlsx_replaces_and_bad_rows_change_nothing(runner, world, tmp_path):
    township = world["township_a"].code
    good = [["06010", township, "01", 10, "", "是", "垃圾归一中队"], ["", township, "02", 100, "是", "", "属地兜底"],
            ["", world["cells_a"][0].code, "02", 50, "", "", ""]]
    result = runner.invoke(args=["rules", "import", str(_write_rules(tmp_path, good, xlsx=True)), "--township", township])
    assert result.exit_code == 0, result.output
    rules = db.session.scalars(select(ResponsibilityRule).order_by(ResponsibilityRule.id)).all()
    assert [(r.squad.code, r.is_fallback, r.auto_dispatch) for r in rules] == [("01", False, True), ("02", True, False),
                                                                              ("02", False, False)]
    bad = [["99999", township, "01", 1, "", "", ""], ["", "330521102", "01", 1, "", "", ""],
           ["", township, "09", "x", "", "", ""], ["06010", township, "01", 1, "是", "", ""]]
    result = runner.invoke(args=["rules", "import", str(_write_rules(tmp_path, bad)), "--township", township])
    assert result.exit_code != 0 and "validation_error" in result.output
    for line in ("2", "3", "4", "5"):
        assert f'"{line}"' in result.output
    db.session.expire_all()
    assert len(db.session.scalars(select(ResponsibilityRule)).all()) == 3


def test_calendar_import_changes_deadlines(runner, world, tmp_path):
    path = tmp_path / "calendar.csv"
    path.write_text("date,is_workday,note\n2027-01-04,休息,县里调休\n2027-01-09,上班,补班\n", encoding="utf-8")
    assert runner.invoke(args=["calendar", "import", str(path)]).exit_code == 0
    calendar = work_calendar()
    assert not calendar.is_workday(date(2027, 1, 4)) and calendar.is_workday(date(2027, 1, 9))
    path.write_text("date,is_workday\n2027-13-01,上班\n", encoding="utf-8")
    result = runner.invoke(args=["calendar", "import", str(path)])
    assert result.exit_code != 0 and "validation_error" in result.output
    assert len(db.session.scalars(select(CalendarDay)).all()) == 2


@pytest.mark.parametrize("offset_m,category,expected", [(30, "06010", True), (80, "06010", False),
                                                        (30, "06012", False)])
def test_likely_duplicates_on_both_sides_of_the_threshold(world, offset_m, category, expected):
    first = report(world)
    second = report(world, category=category)
    incident = db.session.get(Incident, second)
    # Move the second report offset_m metres east of the first (at 30.5°N a metre is ~1.044e-5° of longitude).
    db.session.execute(Incident.__table__.update().where(Incident.id == second).values(
        location=db.func.ST_Translate(db.select(Incident.location).where(Incident.id == first).scalar_subquery(),
                                      offset_m * 1.0436e-5, 0)))
    db.session.commit()
    from gridapp.services.incidents import likely_duplicate
    db.session.expire_all()
    incident = db.session.get(Incident, second)
    assert (likely_duplicate(incident) == first) is expected


def test_duplicate_flag_outside_the_time_window(world, app):
    first = report(world)
    db.session.execute(Incident.__table__.update().where(Incident.id == first)
                       .values(received_at=db.func.now() - db.text("interval '73 hours'")))
    db.session.commit()
    second = report(world)
    assert db.session.get(Incident, second).likely_duplicate_of is None
    third = report(world)
    assert db.session.get(Incident, third).likely_duplicate_of == second


def test_webhook_fails_times_out_recovers_and_is_received_once(app, client, world):
    receiver = WebhookReceiver()
    app.config["WEBHOOK_TIMEOUT_SECONDS"] = 0.5
    try:
        point_squad_at(world["squad_a"], receiver)
        case = report(world)
        act(client, world["users"]["dispatcher"], case, "register")
        act(client, world["users"]["dispatcher"], case, "dispatch", squad_code="01")
        run_worker(app, ["default"], burst=True)  # the outbox job creates the notification; delivery fails
        receiver.failures_left = 1
        notification = db.session.scalar(select(Notification))
        db.session.execute(Notification.__table__.update().values(state="pending", attempts=0))
        db.session.commit()
        with pytest.raises(OSError):
            deliver_notification(notification.id)  # 500
        receiver.delay = 1.0
        with pytest.raises(OSError):
            deliver_notification(notification.id)  # timeout (the receiver still records it late)
        receiver.delay = 0
        assert deliver_notification(notification.id) == "sent"
        assert deliver_notification(notification.id) == "skipped"
        keys = receiver.keys()
        assert set(keys) == {notification.idempotency_key}  # the receiver dedupes by key: acted on once
    finally:
        app.config["WEBHOOK_TIMEOUT_SECONDS"] = 5
        receiver.close()


def test_dead_letters_are_listed_and_retried(app, client, world):
    case = report(world)
    act(client, world["users"]["dispatcher"], case, "register")
    act(client, world["users"]["dispatcher"], case, "dispatch", squad_code="01")  # the squad has no webhook
    run_worker(app, ["default"], burst=True)
    notification = db.session.scalar(select(Notification))
    for _ in range(5):
        try:
            deliver_notification(notification.id)
        except RuntimeError:
            pass
    db.session.expire_all()
    assert db.session.get(Notification, notification.id).state == "dead"
    headers = token_for(world["users"]["dispatcher"])
    dead = client.get("/api/v1/dispatch/notifications?state=dead", headers=headers).get_json()
    assert [d["id"] for d in dead] == [notification.id] and "no webhook" in dead[0]["last_error"]
    receiver = WebhookReceiver()
    try:
        point_squad_at(world["squad_a"], receiver)
        response = client.post(f"/api/v1/dispatch/notifications/{notification.id}/retry", headers=headers,
                               json={"reason": "webhook configured now"})
        assert response.status_code == 200 and response.get_json()["state"] == "pending"
        again = client.post(f"/api/v1/dispatch/notifications/{notification.id}/retry", headers=headers,
                            json={"reason": "twice"})
        assert again.status_code == 409
        run_worker(app, ["default"], burst=True)
        assert len(receiver.received) == 1
        assert db.session.scalar(select(AuditEvent).where(AuditEvent.action == "notification.retry")) is not None
    finally:
        receiver.close()


def route_job_statements(client, world) -> tuple:
    """Register a case that a rule auto-dispatches, run its route message; return (case id, the job's SQL)."""
    add_rule(world, world["squad_a"], category=garbage(world), area=world["township_a"], auto=True)
    case = report(world)
    act(client, world["users"]["dispatcher"], case, "register")
    route = db.session.scalar(select(OutboxMessage.id).where(OutboxMessage.incident_id == case))
    db.session.remove()
    statements = []

    def record(conn, cursor, statement, params, context, executemany):
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    try:
        assert process_outbox_message(route) == "done"
    finally:
        event.remove(db.engine, "before_cursor_execute", record)
    return case, statements


def test_route_job_locks_once_and_loads_no_geometry(app, client, world, receiver):
    """The route job is a short, fixed list of statements: routing, dispatch and notification in one flush
    per step, the case locked once, no cell or area geometry read (a regression guard, not a timing)."""
    case, statements = route_job_statements(client, world)
    assert len(statements) <= 16, statements  # 33 before the rework
    assert sum("FROM incidents" in s and "FOR NO KEY UPDATE" in s for s in statements) == 1
    assert not [s for s in statements if s.startswith("SELECT squads.")]  # the rule's squad, loaded with the rules
    assert not [s for s in statements if "grid_cells.geom" in s or "admin_areas.boundary" in s]
    incident = db.session.get(Incident, case)
    [delivered] = [r["body"] for r in receiver.received]
    assert (delivered["cell_code"], delivered["squad"], delivered["status"]) == (world["cells_a"][0].code, "01", "dispatched")
    assert delivered["due_at"] == incident.due_at.isoformat()


def test_a_notification_is_written_once_per_idempotency_key(app, client, world):
    """A second run (a sweep or job repeated) gets the ids of what is there already, and writes no row twice."""
    case = report(world)
    act(client, world["users"]["dispatcher"], case, "register")
    act(client, world["users"]["dispatcher"], case, "dispatch", squad_code="01")
    incident = db.session.get(Incident, case)
    first = _notifications([(incident, "incident.overdue", "k1"), (incident, "incident.overdue", "k2")])
    again = _notifications([(incident, "incident.overdue", "k2"), (incident, "incident.overdue", "k3")])
    db.session.commit()
    assert len(first) == 2 and again[0] == first[1] and again[1] not in first
    keys = db.session.scalars(select(Notification.idempotency_key).where(Notification.incident_id == case)
                              .order_by(Notification.id)).all()
    assert keys == ["k1", "k2", "k3"]


def test_the_first_delivery_of_a_notification_the_job_wrote_neither_reloads_nor_locks_it(app, client, world, receiver):
    _, statements = route_job_statements(client, world)
    assert not [s for s in statements if "FROM notifications" in s or "FROM squads WHERE squads.id" in s], statements
    notification = db.session.scalar(select(Notification))
    assert (notification.state, notification.attempts, notification.last_error) == ("sent", 1, None)
    assert notification.sent_at is not None and notification.enqueued_at is not None
    assert receiver.keys() == [notification.idempotency_key]


def test_a_first_delivery_leaves_the_record_of_a_delivery_that_took_the_row_meanwhile(app, client, world, receiver,
                                                                                       monkeypatch):
    """Nothing else should deliver a notification that young; if something did, its record stands."""
    add_rule(world, world["squad_a"], category=garbage(world), area=world["township_a"], auto=True)
    case = report(world)
    act(client, world["users"]["dispatcher"], case, "register")
    route = db.session.scalar(select(OutboxMessage.id).where(OutboxMessage.incident_id == case))
    post = dispatch._post

    def another_delivery_first(squad, key, kind, content):
        with db.engine.begin() as other:
            other.execute(update(Notification).where(Notification.idempotency_key == key)
                          .values(state="sent", attempts=1, last_error="the other delivery"))
        post(squad, key, kind, content)
        raise OSError("our attempt failed")

    monkeypatch.setattr(dispatch, "_post", another_delivery_first)
    assert process_outbox_message(route) == "done"
    db.session.expire_all()
    notification = db.session.scalar(select(Notification))
    assert (notification.state, notification.attempts, notification.last_error) == ("sent", 1, "the other delivery")
    monkeypatch.setattr(dispatch, "_post", post)
    assert deliver_notification(notification.id) == "skipped"  # the retry scheduled for our failed attempt
    assert len(receiver.received) == 1


def test_a_rule_naming_another_townships_squad_does_not_dispatch_to_it(app, client, world):
    stranger = ensure_squad(world["squad_b"].team, "09", "九中队", [])
    add_rule(world, stranger, category=garbage(world), area=world["township_a"], auto=True)
    case = report(world)
    act(client, world["users"]["dispatcher"], case, "register")
    route = db.session.scalar(select(OutboxMessage.id).where(OutboxMessage.incident_id == case))
    with pytest.raises(WorkflowInputInvalid):
        process_outbox_message(route)
    db.session.rollback()
    incident = db.session.get(Incident, case)
    assert (incident.status, incident.assigned_squad_id) == ("registered", None)
