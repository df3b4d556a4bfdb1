"""What sync could not apply, for the dispatch centre: quarantined mutations and merge conflicts."""
from datetime import timedelta

from sqlalchemy import select

from gridapp.errors import ReviewItemClosed, ReviewItemNotFound, ValidationFailed
from gridapp.extensions import db
from gridapp.models import (
    AdminArea,
    AuditEvent,
    Device,
    Incident,
    QuarantineItem,
    SyncConflict,
    SyncReceipt,
    User,
    utcnow,
)
from gridapp.services import incidents
from sync import protocol as p
from sync.push import PushContext, apply_mutation

# A reused mutation_id or device_seq means the body cannot take the mutation's place: the first stands.
DISCARD_ONLY = (p.MUTATION_ID_REUSE, p.DEVICE_SEQ_REUSE)


def quarantine_in_scope(prefix: str, state: str | None = "open") -> list[QuarantineItem]:
    """List quarantined mutations of townships inside a scope, oldest first."""
    query = (select(QuarantineItem).join(AdminArea, AdminArea.id == QuarantineItem.township_id)
             .where(AdminArea.code.startswith(prefix)).order_by(QuarantineItem.id))
    if state:
        query = query.where(QuarantineItem.state == state)
    return list(db.session.scalars(query))


def _open_item(item_id: int, prefix: str) -> QuarantineItem:
    item = db.session.scalar(select(QuarantineItem).where(QuarantineItem.id == item_id).with_for_update())
    if item is None or not db.session.get(AdminArea, item.township_id).code.startswith(prefix):
        raise ReviewItemNotFound(id=item_id)
    if item.state != "open":
        raise ReviewItemClosed(id=item_id, state=item.state)
    return item


def resolve_quarantine(item_id: int, prefix: str, actor: User, action: str, reason: str,
                       payload: dict | None = None) -> dict:
    """Apply (as sent, or edited) or discard a quarantined mutation; audited.

    Applying skips the scope check (the dispatcher decided) but nothing else: an edited body is
    validated like any mutation. A phone that replays the original body afterwards gets `duplicate`.

    :raises ReviewItemNotFound, ReviewItemClosed: no open item in scope.
    :raises ValidationFailed: an action that does not fit the item, or an edit that is still invalid.
    """
    item = _open_item(item_id, prefix)
    result = None
    if action == "discard":
        item.state = "discarded"
    elif action in ("apply", "edit_and_apply"):
        if item.code in DISCARD_ONLY:
            raise ValidationFailed(f"A {item.code} item can only be discarded: the first body stands.")
        body = payload if action == "edit_and_apply" else item.payload
        if action == "edit_and_apply" and not isinstance(body, dict):
            raise ValidationFailed(fields={"payload": ["The edited mutation is required."]})
        result = _apply_reviewed(item, body)
        item.state = "applied"
    else:
        raise ValidationFailed(fields={"action": ["One of apply, edit_and_apply, discard."]})
    item.resolved_by_id, item.resolution_reason, item.resolved_at = actor.id, reason, utcnow()
    db.session.add(AuditEvent(actor_id=actor.id, action=f"sync.quarantine.{action}", object_type="sync_quarantine",
                              object_id=str(item.id), reason=reason,
                              details={"code": item.code, "result": result, "edited": action == "edit_and_apply"}))
    db.session.flush()
    return {"id": item.id, "state": item.state, "result": result}


def _apply_reviewed(item: QuarantineItem, body: dict) -> dict:
    receipt = db.session.get(SyncReceipt, item.mutation_id) if item.mutation_id else None
    if receipt is not None:
        db.session.delete(receipt)
        db.session.flush()
    reporter = db.session.get(User, item.user_id)
    ctx = PushContext.of(reporter, db.session.get(Device, item.device_id), clock_suspect=False,
                         grace=timedelta(0), unknown_incident_window=timedelta(0), trusted=True)
    result = apply_mutation(body, ctx)
    if result["status"] not in (p.APPLIED, p.MERGED):
        raise ValidationFailed("The mutation still cannot be applied.", result=result)
    # Replays of the body the phone sent must find this outcome.
    applied = db.session.get(SyncReceipt, item.mutation_id)
    applied.request_sha256 = item.payload_sha256
    return result


def conflicts_in_scope(prefix: str, state: str | None = "needs_review") -> list[SyncConflict]:
    """List merge conflicts on incidents of townships inside a scope."""
    query = (select(SyncConflict).join(Incident, Incident.id == SyncConflict.incident_id)
             .join(AdminArea, AdminArea.id == Incident.township_id)
             .where(AdminArea.code.startswith(prefix)).order_by(SyncConflict.id))
    if state:
        query = query.where(SyncConflict.state == state)
    return list(db.session.scalars(query))


def resolve_conflict(conflict_id: int, prefix: str, actor: User, action: str, reason: str) -> dict:
    """Keep the applied value (`accept`) or restore the other side's (`restore_server`); audited."""
    conflict = next((c for c in conflicts_in_scope(prefix, state=None) if c.id == conflict_id), None)
    if conflict is None:
        raise ReviewItemNotFound(id=conflict_id)
    if conflict.state != "needs_review":
        raise ReviewItemClosed(id=conflict_id, state=conflict.state)
    if action not in ("accept", "restore_server"):
        raise ValidationFailed(fields={"action": ["One of accept, restore_server."]})
    version = None
    if action == "restore_server":
        incident = incidents.lock_incident(conflict.incident_id)
        incidents.change_fields(incident, {conflict.field: conflict.server_value}, actor=actor, source="review",
                                mutation_id=None)
        version = incident.version
    conflict.state, conflict.resolved_by_id = "resolved", actor.id
    conflict.resolution_reason, conflict.resolved_at = reason, utcnow()
    db.session.add(AuditEvent(actor_id=actor.id, action=f"sync.conflict.{action}", object_type="sync_conflict",
                              object_id=str(conflict.id), reason=reason,
                              details={"incident_id": str(conflict.incident_id), "field": conflict.field}))
    db.session.flush()
    return {"id": conflict.id, "state": conflict.state, "version": version}
