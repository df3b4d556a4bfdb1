"""Notifications to squads as the dispatch centre sees them: listing and retrying dead letters."""
from sqlalchemy import select

from gridapp.errors import Conflict, NotFound
from gridapp.extensions import db
from gridapp.models import AdminArea, AuditEvent, Incident, Notification, User


def notifications_in_scope(prefix: str, state: str) -> list[Notification]:
    """List notifications of cases in townships inside a scope, newest first."""
    return list(db.session.scalars(
        select(Notification).join(Incident, Incident.id == Notification.incident_id)
        .join(AdminArea, AdminArea.id == Incident.township_id)
        .where(AdminArea.code.startswith(prefix), Notification.state == state).order_by(Notification.id.desc())))


def retry_dead(notification_id: int, prefix: str, actor: User, reason: str) -> Notification:
    """Make a dead letter pending again (the caller enqueues it after commit); audited.

    :raises NotFound: none in scope.  :raises Conflict: it is not dead.
    """
    notification = db.session.scalar(select(Notification).where(Notification.id == notification_id).with_for_update())
    incident = db.session.get(Incident, notification.incident_id) if notification else None
    if notification is None or not db.session.get(AdminArea, incident.township_id).code.startswith(prefix):
        raise NotFound(id=notification_id)
    if notification.state != "dead":
        raise Conflict("Only dead letters are retried.", state=notification.state)
    notification.state, notification.attempts = "pending", 0
    db.session.add(AuditEvent(actor_id=actor.id, action="notification.retry", object_type="notification",
                              object_id=str(notification.id), reason=reason, details={"key": notification.idempotency_key}))
    db.session.flush()
    return notification
