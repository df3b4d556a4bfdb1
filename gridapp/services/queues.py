"""The dispatch centre's work queues: which cases wait for whom (docs/dashboard.md, "Queues").

Every queue is limited to the caller's area (`prefix`) and ordered so the most urgent comes first.
Quarantine, conflicts and dead letters come from sync/review.py and services/dispatching.py."""
import hashlib
import uuid
from datetime import timedelta

from flask import current_app
from sqlalchemy import select, text
from sqlalchemy.orm import joinedload

from gridapp.extensions import db
from gridapp.models import OPEN_STATUSES, AdminArea, CaseRequest, Incident, utcnow

QUEUE_LIMIT = 200  # a queue longer than this is shown truncated, with its total


def _in_scope(prefix: str):
    return (select(Incident).join(AdminArea, AdminArea.id == Incident.township_id)
            .where(AdminArea.code.startswith(prefix))
            .options(joinedload(Incident.cell), joinedload(Incident.category), joinedload(Incident.squad)))


def _list(query) -> list[Incident]:
    return list(db.session.scalars(query.limit(QUEUE_LIMIT)).unique())


def new_reports(prefix: str) -> list[Incident]:
    """Reports waiting to be registered (受理), oldest first; `likely_duplicate_of` is shown beside each."""
    return _list(_in_scope(prefix).where(Incident.status.in_(("reported", "verifying")))
                 .order_by(Incident.received_at))


def to_dispatch(prefix: str) -> list[Incident]:
    """Registered cases routed to a squad but not dispatched yet (the rule was not auto-dispatch)."""
    return _list(_in_scope(prefix).where(Incident.status == "registered", Incident.is_ownerless.is_(False))
                 .order_by(Incident.updated_at))


def ownerless(prefix: str) -> list[Incident]:
    """Registered cases no rule of the responsibility list matched (无主件): a person must pick a squad."""
    return _list(_in_scope(prefix).where(Incident.status == "registered", Incident.is_ownerless.is_(True))
                 .order_by(Incident.updated_at))


def returned(prefix: str) -> list[Incident]:
    """Cases a squad sent back (回退), to dispatch again."""
    return _list(_in_scope(prefix).where(Incident.status == "returned").order_by(Incident.updated_at))


def pending_requests(prefix: str) -> list[tuple[CaseRequest, Incident]]:
    """Extension (延期) and parking (挂账) requests waiting for the duty chief, oldest first."""
    rows = db.session.execute(
        select(CaseRequest, Incident).join(Incident, Incident.id == CaseRequest.incident_id)
        .join(AdminArea, AdminArea.id == Incident.township_id)
        .where(AdminArea.code.startswith(prefix), CaseRequest.state == "pending")
        .order_by(CaseRequest.created_at).limit(QUEUE_LIMIT))
    return [tuple(row) for row in rows]


def due_soon(prefix: str) -> list[Incident]:
    """Cases with a squad whose deadline falls within the warning window, soonest first."""
    now = utcnow()
    window = timedelta(seconds=current_app.config["DUE_SOON_WARNING_SECONDS"])
    return _list(_in_scope(prefix).where(Incident.status.in_(("dispatched", "handling")),
                                         Incident.due_at > now, Incident.due_at <= now + window)
                 .order_by(Incident.due_at))


def overdue(prefix: str) -> list[Incident]:
    """Cases with a squad past their deadline, most overdue first."""
    return _list(_in_scope(prefix).where(Incident.status.in_(("dispatched", "handling")), Incident.due_at <= utcnow())
                 .order_by(Incident.due_at))


def awaiting_check(prefix: str) -> list[Incident]:
    """Handled cases waiting for the grid worker's check (核查), oldest first."""
    return _list(_in_scope(prefix).where(Incident.status.in_(("handled", "checking"))).order_by(Incident.updated_at))


def incidents_by_id(ids, prefix: str) -> dict[uuid.UUID, Incident]:
    """Load the incidents of these ids that lie in the area (the likely duplicates beside new reports: one
    across a township border is not shown)."""
    ids = [i for i in set(ids) if i]
    return {i.id: i for i in _list(_in_scope(prefix).where(Incident.id.in_(ids)))} if ids else {}


def open_cases_in_cell(cell_id: int, prefix: str) -> list[Incident]:
    """Open cases of one cell (the map's cell popup), newest first."""
    return _list(_in_scope(prefix).where(Incident.cell_id == cell_id, Incident.status.in_(OPEN_STATUSES))
                 .order_by(Incident.received_at.desc()))


_LIVE_TOKEN_SQL = text("""
SELECT concat_ws('.', (SELECT max(sync_seq) FROM incidents), (SELECT max(id) FROM case_requests),
                 (SELECT count(*) FROM case_requests WHERE state = 'pending'),
                 (SELECT max(id) FROM sync_quarantine), (SELECT max(id) FROM sync_conflicts),
                 (SELECT count(*) FROM notifications WHERE state = 'dead'))
""")


def live_token() -> str:
    """A token that changes whenever a case, a request, a review item or a dead letter changes.

    Global, not per area: incidents' commit-ordered sync_seq makes it one index lookup even with a
    million cases; a change elsewhere only costs the page one needless refresh."""
    return db.session.execute(_LIVE_TOKEN_SQL).scalar()


def live_etag() -> str:
    """The change token as a short opaque ETag."""
    return hashlib.sha256(live_token().encode()).hexdigest()[:32]
