"""The case workflow as a state machine (DOMAIN.md §2.3): each action names its source statuses, its
target, the roles that may take it and whether it needs a reason. `perform` checks all of that under a
row lock, applies the action's effect and writes an append-only event; background work (routing,
notifying a squad) is written to the outbox in the same transaction."""
import json
import uuid
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import select, text
from sqlalchemy.orm import joinedload

from gridapp.errors import (
    AfterPhotoRequired,
    Forbidden,
    IncidentNotFound,
    InvalidTransition,
    NotAssignee,
    ReasonRequired,
    WorkflowInputInvalid,
)
from gridapp.extensions import db
from gridapp.models import (
    OPEN_STATUSES,
    SQUAD_ROLES,
    AdminArea,
    CalendarDay,
    CaseRequest,
    Category,
    CategoryCondition,
    EnforcementTeam,
    GridCell,
    Incident,
    IncidentEvent,
    IncidentNote,
    OutboxMessage,
    Squad,
    User,
    utcnow,
)
from gridapp.services import incidents as incidents_
from gridapp.services import photos as photos_
from gridapp.services.worktime import WorkCalendar

CHIEFS = frozenset({"dispatcher", "duty_chief"})
SQUAD = frozenset(SQUAD_ROLES)
WORKER = frozenset({"grid_worker"})
SYSTEM = "system"  # the role recorded for what jobs do


@dataclass(frozen=True)
class Action:
    name: str
    sources: tuple[str, ...]
    target: str | None  # None: the effect decides (or the status stays)
    roles: frozenset[str]
    reason_required: bool = False


ACTIONS = {a.name: a for a in (
    Action("request_verification", ("reported",), "verifying", CHIEFS),
    Action("verify", ("verifying",), None, WORKER),  # exists → reported, else invalid (with a reason)
    Action("register", ("reported",), "registered", CHIEFS | {SYSTEM}),  # the system: 自动立案 on arrival
    Action("reject", ("reported", "verifying"), "invalid", CHIEFS, reason_required=True),
    Action("merge", ("reported", "verifying"), "duplicate", CHIEFS),
    Action("dispatch", ("registered", "returned"), "dispatched", CHIEFS | {SYSTEM}),
    Action("return", ("dispatched",), "returned", SQUAD, reason_required=True),
    Action("accept", ("dispatched",), "handling", SQUAD),
    Action("request_extension", ("handling",), None, SQUAD, reason_required=True),
    Action("request_park", ("handling",), None, SQUAD, reason_required=True),
    Action("decide_request", ("handling",), None, frozenset({"duty_chief"})),
    Action("resume", ("parked",), "handling", frozenset({"duty_chief"})),
    Action("submit_result", ("handling",), "handled", SQUAD, reason_required=True),
    Action("request_check", ("handled",), "checking", CHIEFS | {SYSTEM}),
    Action("pass_check", ("checking",), "closed", WORKER),
    Action("fail_check", ("checking",), "handling", WORKER, reason_required=True),
    Action("self_handle", ("reported",), "closed", WORKER, reason_required=True),
    Action("supervise", OPEN_STATUSES, None, frozenset({"duty_chief"}), reason_required=True),
)}


def work_calendar() -> WorkCalendar:
    """The national calendar with this deployment's imported local days, read once per transaction (a job
    dispatching several cases in one transaction reads it once; a new transaction sees an import)."""
    session = db.session()
    transaction = session.get_transaction()
    cached = session.info.get("work_calendar")
    if transaction is not None and cached is not None and cached[0] is transaction:
        return cached[1]
    calendar = WorkCalendar(dict(db.session.execute(select(CalendarDay.day, CalendarDay.is_workday)).all()))
    session.info["work_calendar"] = (session.get_transaction(), calendar)
    return calendar


def case_for_answer(incident_id: uuid.UUID) -> Incident:
    """Load a case with what its API answer names (category, cell code, reporter, squad, task user) in one
    statement, without the cell's geometry; for after an action committed (its scope was checked)."""
    return db.session.scalar(select(Incident).where(Incident.id == incident_id).options(
        joinedload(Incident.category), joinedload(Incident.cell).load_only(GridCell.code),
        joinedload(Incident.reporter).load_only(User.username), joinedload(Incident.squad),
        joinedload(Incident.task_user).load_only(User.username)))


def allowed_actions(incident: Incident, user: User) -> list[str]:
    """The actions this user may take on this case now (for the dashboard's buttons)."""
    return [a.name for a in ACTIONS.values() if incident.status in a.sources and user.role in a.roles
            and _assignee_problem(a, incident, user) is None]


def _assignee_problem(action: Action, incident: Incident, user: User | None) -> str | None:
    if user is None:
        return None
    if action.roles <= SQUAD | {SYSTEM} and user.squad_id != incident.assigned_squad_id:
        return "The case is assigned to another squad."
    if action.name in ("verify", "pass_check", "fail_check") and incident.task_user_id != user.id:
        return "This task is assigned to another grid worker."
    if action.name == "self_handle" and incident.reporter_id != user.id:
        return "Only the reporter may close their own report as self-handled."
    return None


# Completing the handling needs an after-handling photo (WORKFLOW_REQUIRE_AFTER_PHOTO).
NEEDS_AFTER_PHOTO = ("submit_result", "self_handle")
# The events after which a new round of handling starts (a photo from an earlier round does not count).
HANDLING_STARTS = ("incident.accept", "incident.fail_check")


def perform(incident_id: uuid.UUID, action_name: str, actor: User | None, *, prefix: str,
            reason: str | None = None, params: dict | None = None, photos: list[dict] | None = None) -> IncidentEvent:
    """Take a workflow action on a case; `actor` None means the system (a job).

    `photos` (declared by hash, as in a sync mutation) are attached to the incident and to this event;
    their bytes may follow later through the upload endpoints.

    :raises IncidentNotFound: no such case in the area (`prefix`).
    :raises Forbidden: the role may not take this action.
    :raises InvalidTransition: not possible from the current status.
    :raises NotAssignee: another squad's case, or another worker's task.
    :raises ReasonRequired, WorkflowInputInvalid: missing reason or bad parameters.
    :raises AfterPhotoRequired: completing without an after-handling photo.
    :raises PhotoImmutable: a photo's attachment_id is already declared with other content.
    """
    _action(action_name)
    incident = incidents_.lock_incident(incident_id)
    if incident is None or not _in_area(incident, prefix):
        raise IncidentNotFound(id=str(incident_id))
    return perform_locked(incident, action_name, actor, reason=reason, params=params, photos=photos)


def perform_locked(incident: Incident, action_name: str, actor: User | None, *, reason: str | None = None,
                   params: dict | None = None, photos: list[dict] | None = None) -> IncidentEvent:
    """Take a workflow action on a case the caller has already locked (`lock_incident`) and scoped, as
    `perform` does; a job uses it to lock once for several steps. Raises as `perform` does."""
    action = _action(action_name)
    role = actor.role if actor else SYSTEM
    if role not in action.roles:
        raise Forbidden(f"A {role} may not {action.name.replace('_', ' ')}.", action=action.name)
    if incident.status not in action.sources:
        raise InvalidTransition(status=incident.status, action=action.name, allowed_from=list(action.sources))
    problem = _assignee_problem(action, incident, actor)
    if problem:
        raise NotAssignee(problem)
    reason = (reason or "").strip() or None
    if action.reason_required and not reason:
        raise ReasonRequired(action=action.name)
    photos = photos or []
    for spec in photos:
        photos_.check_declarable(incident.id, spec)
    if action.name in NEEDS_AFTER_PHOTO and not _has_after_photo(incident, photos):
        raise AfterPhotoRequired(action=action.name)
    before = incident.status
    details = EFFECTS[action.name](incident, actor, reason, params or {}) or {}
    if action.target:
        incident.status = action.target
    incident.version += 1
    incident.updated_at = utcnow()
    event = IncidentEvent(incident_id=incident.id, action=f"incident.{action.name}", actor_id=actor.id if actor else None,
                          actor_role=role, from_status=before, to_status=incident.status, reason=reason,
                          details=details, outbox=[OutboxMessage(kind=kind, incident=incident)
                                                   for kind in FOLLOW_UPS.get(action.name, ())])
    db.session.add(event)
    db.session.flush()  # one flush: the case's update, its event and outbox rows (their ids for the caller)
    if photos:
        declared = [photos_.declare_photo(incident, spec, user=actor, event_id=event.id) for spec in photos]
        event.details = {**event.details, "photos": [{"attachment_id": str(p.id), "type": p.photo_type,
                                                      "sha256": p.sha256} for p in declared]}
        db.session.flush()
    return event


AUTO_REGISTER_REASON = "自动立案"


def register_on_arrival(incident: Incident, reporter_role: str) -> IncidentEvent | None:
    """自动立案: register a grid worker's new report at once when its 小类 is `auto_register`.

    Only a report inside the grid and not a likely duplicate: those wait for a dispatcher. Returns the
    register event, whose outbox (the `route` message) the caller enqueues after its commit, or None.
    """
    if (not may_register_on_arrival(reporter_role, incident.is_outside_grid, incident.likely_duplicate_of)
            or incident.category_id is None):
        return None
    if not db.session.scalar(select(Category.auto_register).where(Category.id == incident.category_id)):
        return None
    return perform_locked(incident, "register", None, reason=AUTO_REGISTER_REASON)


def may_register_on_arrival(reporter_role: str, is_outside_grid: bool, likely_duplicate_of) -> bool:
    """Whether a new report of an `auto_register` 小类 registers on arrival: a grid worker's, inside the grid,
    not a likely duplicate (the others wait for a dispatcher). The one-by-one and set-based pushes both ask."""
    return reporter_role == "grid_worker" and not is_outside_grid and likely_duplicate_of is None


@dataclass(frozen=True)
class ArrivalCondition:
    """What registering on arrival takes from a 小类: its id and its 立案条件 1."""

    category_id: int
    condition_id: int
    details: dict  # the register event's details, as the `register` effect records them


def categories_on_arrival(codes: set[str]) -> tuple[dict[str, int], dict[str, ArrivalCondition | None]]:
    """Return the ids of the categories with these codes (`incidents.event_categories`) and, for
    those that register on arrival (`auto_register`), their 立案条件 1, or None when the category has none
    (the one-by-one path then refuses the registration as the `register` action does). One statement."""
    rows = db.session.execute(
        select(Category.code, Category.id, Category.auto_register, CategoryCondition.id.label("condition_id"),
               CategoryCondition.time_limit, CategoryCondition.time_unit)
        .outerjoin(CategoryCondition, (CategoryCondition.category_id == Category.id) & (CategoryCondition.seq == 1))
        .where(*incidents_.event_categories(codes))).all()
    conditions = {row.code: ArrivalCondition(row.id, row.condition_id, {
        "condition_seq": 1, "time_limit": row.time_limit, "time_unit": row.time_unit}) if row.condition_id else None
        for row in rows if row.auto_register}
    return {row.code: row.id for row in rows}, conditions


def arrives_registered(values: dict, condition: ArrivalCondition) -> None:
    """Make a new incident's column values (`incidents.new_incident_values`) those of the case after
    `register_on_arrival`: registered under its 立案条件 1, version 2. The caller has checked what
    `register_on_arrival` checks, and writes the events with `write_arrival_registrations`."""
    values.update(status=ACTIONS["register"].target, version=values["version"] + 1, condition_id=condition.condition_id)


_ARRIVAL_EVENTS_SQL = text("""
WITH e AS (
  INSERT INTO incident_events (incident_id, action, actor_id, actor_role, from_status, to_status, reason, details)
  SELECT t.id, 'incident.register', NULL, :role, 'reported', 'registered', :reason, t.details
  FROM unnest(CAST(:ids AS uuid[]), CAST(:details AS jsonb[])) WITH ORDINALITY AS t(id, details, ord)
  ORDER BY t.ord
  RETURNING id, incident_id)
INSERT INTO outbox_messages (kind, incident_id, event_id, payload, attempts)
SELECT 'route', e.incident_id, e.id, '{}'::jsonb, 0 FROM e ORDER BY e.id
RETURNING id""")


def write_arrival_registrations(cases: list[tuple[uuid.UUID, ArrivalCondition]]) -> list[int]:
    """Write the register events (and their `route` outbox messages) of cases inserted registered
    (`arrives_registered`), as `perform_locked(…, "register", None, reason=AUTO_REGISTER_REASON)` writes
    them, in one statement; return the outbox ids to enqueue after the commit."""
    if not cases:
        return []
    assert FOLLOW_UPS["register"] == ("route",)
    return list(db.session.scalars(_ARRIVAL_EVENTS_SQL, {
        "role": SYSTEM, "reason": AUTO_REGISTER_REASON, "ids": [incident_id for incident_id, _ in cases],
        "details": [json.dumps(condition.details) for _, condition in cases]}))


def _action(name: str) -> Action:
    action = ACTIONS.get(name)
    if action is None:
        raise WorkflowInputInvalid(f"Unknown action {name!r}.", actions=sorted(ACTIONS))
    return action


def _in_area(incident: Incident, prefix: str) -> bool:
    """Tell whether the case's township is inside a scope (the code alone: the area row carries its boundary)."""
    return not prefix or db.session.scalar(select(AdminArea.code).where(AdminArea.id == incident.township_id)) \
        .startswith(prefix)


def _has_after_photo(incident: Incident, photos: list[dict]) -> bool:
    """An after-handling photo comes with the action, or was declared (by sync) since handling last started."""
    if not current_app.config["WORKFLOW_REQUIRE_AFTER_PHOTO"]:
        return True
    if any(spec["type"] == "after_handling" for spec in photos):
        return True
    started = db.session.scalar(select(IncidentEvent.created_at).where(
        IncidentEvent.incident_id == incident.id, IncidentEvent.action.in_(HANDLING_STARTS))
        .order_by(IncidentEvent.id.desc()).limit(1))
    return photos_.has_photo(incident, "after_handling", since=started)


def record_event(incident: Incident, action: str, details: dict) -> IncidentEvent:
    """Record something the system did or noticed that leaves the status as it is (routing, deadlines)."""
    event = IncidentEvent(incident_id=incident.id, action=action, actor_id=None, actor_role=SYSTEM,
                          from_status=incident.status, to_status=incident.status, details=details)
    db.session.add(event)  # flushed with the caller's next change: nothing needs its id
    return event


# --- effects: each returns the details recorded on the event ------------------------------------------
def _worker_for(incident: Incident, prefer_reporter: bool) -> User | None:
    """The grid worker for a field task: the reporter if asked and able, else the cell's worker."""
    if prefer_reporter and incident.reporter.role == "grid_worker" and incident.reporter.is_active:
        return incident.reporter
    if incident.cell_id:
        code = db.session.scalar(select(GridCell.code).where(GridCell.id == incident.cell_id))
        worker = db.session.scalar(
            select(User).join(User.cells).where(GridCell.code == code, GridCell.valid_to.is_(None),
                                                User.is_active).order_by(User.username))
        if worker:
            return worker
    return incident.reporter if incident.reporter.role == "grid_worker" else None


def _assign_task(incident, *, prefer_reporter: bool, missing: str) -> dict:
    """Give the case's field task (核实 or 核查) to a grid worker."""
    worker = _worker_for(incident, prefer_reporter=prefer_reporter)
    if worker is None:
        raise WorkflowInputInvalid(missing)
    incident.task_user_id = worker.id
    return {"task_user": worker.username}


def _on_time(incident) -> bool:
    return incident.due_at is None or utcnow() <= incident.due_at


def _request_verification(incident, actor, reason, params):
    return _assign_task(incident, prefer_reporter=False, missing="No grid worker covers this place.")


def _verify(incident, actor, reason, params):
    exists = params.get("exists")
    if not isinstance(exists, bool):
        raise WorkflowInputInvalid(fields={"exists": ["true or false: does the reported problem exist?"]})
    if not exists and not reason:
        raise ReasonRequired(action="verify")
    incident.status = "reported" if exists else "invalid"
    incident.task_user_id = None
    return {"exists": exists}


def _register(incident, actor, reason, params):
    if incident.category_id is None:
        raise WorkflowInputInvalid("Set a known category before registering.", category=incident.category_code_raw)
    seq = params.get("condition_seq", 1)
    condition = db.session.scalar(select(CategoryCondition).where(
        CategoryCondition.category_id == incident.category_id, CategoryCondition.seq == seq))
    if condition is None:
        raise WorkflowInputInvalid(fields={"condition_seq": [f"No 立案条件 {seq} for this category."]})
    incident.condition_id = condition.id
    return {"condition_seq": seq, "time_limit": condition.time_limit, "time_unit": condition.time_unit}


def _reject(incident, actor, reason, params):
    incident.task_user_id = None


def _merge(incident, actor, reason, params):
    master = incidents_.lock_incident(_uuid(params.get("master_id"), "master_id"))
    if master is None or master.township_id != incident.township_id or master.id == incident.id:
        raise WorkflowInputInvalid(fields={"master_id": ["An open case of the same township."]})
    if master.status not in OPEN_STATUSES:
        raise WorkflowInputInvalid(fields={"master_id": ["The master case is closed."]})
    incident.master_id = master.id
    copied = 0
    for note in list(incident.notes):  # the reporter's notes and photos join the master
        db.session.add(IncidentNote(id=uuid.uuid5(master.id, str(note.id)), incident_id=master.id,
                                    author_id=note.author_id, text=note.text, created_at_device=note.created_at_device))
        copied += 1
    photos = photos_.copy_photos(incident, master)
    db.session.add(IncidentEvent(incident_id=master.id, action="incident.merged_in", actor_id=actor.id,
                                 actor_role=actor.role, from_status=master.status, to_status=master.status,
                                 reason=reason, details={"duplicate": str(incident.id), "notes": copied,
                                                         "photos": photos}))
    return {"master_id": str(master.id), "notes_copied": copied, "photos_copied": photos}


def _dispatch(incident, actor, reason, params):
    squad = _squad(params.get("squad_code"), incident, params.get("rule_squad") if actor is None else None)
    incident.squad = squad  # the relationship: the squad stays loaded for the notification's body
    condition = db.session.get(CategoryCondition, incident.condition_id)
    incident.due_at = work_calendar().add(utcnow(), condition.time_limit, condition.time_unit)
    incident.warned_at = incident.overdue_at = None
    return {"squad": squad.code, "due_at": incident.due_at.isoformat(), "rule_id": params.get("rule_id")}


def _squad(code, incident, loaded: Squad | None = None) -> Squad:
    """The squad of the case's township with this code. The route job passes its rule's squad, loaded
    with its team (routing.route): when it is that squad, no lookup."""
    if not code:
        raise WorkflowInputInvalid(fields={"squad_code": ["Which squad?"]})
    if loaded is not None and loaded.code == code and loaded.team.township_id == incident.township_id:
        return loaded
    squad = db.session.scalar(select(Squad).join(Squad.team).where(
        Squad.code == code, EnforcementTeam.township_id == incident.township_id))
    if squad is None:
        raise WorkflowInputInvalid(fields={"squad_code": ["No such squad in the case's township."]})
    return squad


def _return(incident, actor, reason, params):
    squad_id = incident.assigned_squad_id
    incident.assigned_squad_id = None
    incident.due_at = None
    return {"returned_by_squad_id": squad_id}


def _accept(incident, actor, reason, params):
    return {}


def _request(kind):
    def effect(incident, actor, reason, params):
        amount = params.get("amount") if kind == "extension" else None
        if kind == "extension" and (not isinstance(amount, (int, float)) or amount <= 0):
            raise WorkflowInputInvalid(fields={"amount": ["How much longer, in the case's time unit?"]})
        pending = db.session.scalar(select(CaseRequest).where(CaseRequest.incident_id == incident.id,
                                                              CaseRequest.state == "pending"))
        if pending is not None:
            raise InvalidTransition("A request is already waiting for the duty chief.", request_id=pending.id)
        request = CaseRequest(incident_id=incident.id, kind=kind, amount=amount, reason=reason,
                              requested_by_id=actor.id)
        db.session.add(request)
        db.session.flush()
        return {"request_id": request.id, "kind": kind, "amount": amount}
    return effect


def _decide_request(incident, actor, reason, params):
    request = db.session.scalar(select(CaseRequest).where(CaseRequest.incident_id == incident.id,
                                                          CaseRequest.state == "pending").with_for_update())
    if request is None:
        raise InvalidTransition("No request is waiting for a decision.")
    approve = params.get("approve")
    if not isinstance(approve, bool):
        raise WorkflowInputInvalid(fields={"approve": ["true or false"]})
    if not approve and not reason:
        raise ReasonRequired(action="decide_request")
    request.state = "approved" if approve else "rejected"
    request.decided_by_id, request.decision_reason, request.decided_at = actor.id, reason, utcnow()
    if approve and request.kind == "extension":
        condition = db.session.get(CategoryCondition, incident.condition_id)
        incident.due_at = work_calendar().add(incident.due_at, request.amount, condition.time_unit)
    elif approve and request.kind == "park":
        incident.paused_work_seconds = _remaining(incident)
        incident.status = "parked"
    return {"request_id": request.id, "kind": request.kind, "approved": approve,
            "due_at": incident.due_at.isoformat() if incident.due_at else None}


def _remaining(incident) -> float:
    """What is left of the clock now: real seconds for 紧急工作时, working seconds otherwise."""
    now = utcnow()
    condition = db.session.get(CategoryCondition, incident.condition_id)
    if condition.time_unit == "urgent_hours":
        return (incident.due_at - now).total_seconds()
    left = work_calendar().work_seconds_between(now, incident.due_at)
    return left if incident.due_at > now else -work_calendar().work_seconds_between(incident.due_at, now)


def _resume(incident, actor, reason, params):
    condition = db.session.get(CategoryCondition, incident.condition_id)
    left = incident.paused_work_seconds or 0.0
    if condition.time_unit == "urgent_hours" or left <= 0:
        incident.due_at = utcnow() + timedelta(seconds=left)
    else:
        incident.due_at = work_calendar().add_work_seconds(utcnow(), left)
    incident.paused_work_seconds = None
    return {"due_at": incident.due_at.isoformat()}


def _submit_result(incident, actor, reason, params):
    return {"on_time": _on_time(incident)}


def _request_check(incident, actor, reason, params):
    return _assign_task(incident, prefer_reporter=True, missing="No grid worker can check this case.")


def _pass_check(incident, actor, reason, params):
    incident.task_user_id = None
    return {"on_time": _on_time(incident)}


def _fail_check(incident, actor, reason, params):
    incident.task_user_id = None
    incident.rework_count += 1
    return {"rework_count": incident.rework_count}


def _self_handle(incident, actor, reason, params):
    incident.is_self_handled = True
    return {}


def _supervise(incident, actor, reason, params):
    level = params.get("level", 1)
    if level not in (1, 2, 3):
        raise WorkflowInputInvalid(fields={"level": ["1, 2 or 3"]})
    incident.supervision_level = max(level, incident.supervision_level or 0)
    return {"level": incident.supervision_level}


def _uuid(value, name):
    try:
        return uuid.UUID(str(value))
    except ValueError as exc:
        raise WorkflowInputInvalid(fields={name: ["A case id."]}) from exc


EFFECTS = {
    "request_verification": _request_verification, "verify": _verify, "register": _register, "reject": _reject,
    "merge": _merge, "dispatch": _dispatch, "return": _return, "accept": _accept,
    "request_extension": _request("extension"), "request_park": _request("park"), "decide_request": _decide_request,
    "resume": _resume, "submit_result": _submit_result, "request_check": _request_check,
    "pass_check": _pass_check, "fail_check": _fail_check, "self_handle": _self_handle, "supervise": _supervise,
}
# Background work after the action commits: routing after registration, telling the squad after dispatch,
# sending the check task after a result.
FOLLOW_UPS = {"register": ("route",), "dispatch": ("notify",), "submit_result": ("request_check",)}
