"""Push: apply one mutation exactly once, or quarantine it; never bounce it back to wedge the queue.

apply_in_own_transaction runs each mutation in its own transaction and commits after apply_mutation
returns; the receipt is written in the same transaction as the effect, so a replay finds it and answers
`duplicate` with the original result. Plain creates usually take the set-based path of sync/bulk.py,
which falls back to this one for anything unusual.
"""
import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from marshmallow import ValidationError
from sqlalchemy import select

from geo.errors import GeometryError
from gridapp.errors import PhotoImmutable
from gridapp.extensions import db
from gridapp.models import (
    DISPATCH_FIELDS,
    WORKER_FIELDS,
    Device,
    Incident,
    IncidentNote,
    QuarantineItem,
    SyncConflict,
    SyncDeferral,
    SyncReceipt,
    User,
    utcnow,
)
from gridapp.services import incidents, photos, workflow
from gridapp.services.scope import codes_within_grace, current_scope
from gridapp.transactions import ATTEMPTS, commit_unless_raced
from sync import protocol as p
from sync.schemas import MUTATION_SCHEMAS, IncidentDataSchema

log = logging.getLogger(__name__)

@dataclass
class PushContext:
    """Who is pushing, and what this batch has learnt so far.

    Plain values, not ORM rows: the API has them from the request's principal (no statement), and rows
    held across the batch's COMMITs would be reloaded after each. The one-by-one path loads `user` and
    `device` when it needs them.
    """

    user_id: int
    user_role: str
    area_id: int
    area_code: str
    device_id: uuid.UUID
    clock_suspect: bool
    grace: timedelta
    unknown_incident_window: timedelta
    trusted: bool = False  # a dispatcher applying a reviewed item: the scope check is theirs
    quarantined_incidents: set = field(default_factory=set)  # incident ids quarantined earlier in the batch
    outbox: list = field(default_factory=list)  # committed outbox message ids, to enqueue after the batch
    arrival: dict = field(default_factory=dict)  # category code → workflow.ArrivalCondition (set-based 自动立案)
    category_ids: dict = field(default_factory=dict)  # category code → id, as sync.bulk.screen found them
    applied_seqs: dict = field(default_factory=dict)  # incident id → sync_seq, of the committed set-based runs
    _grace_codes: frozenset | None = None

    @classmethod
    def of(cls, user: User, device: Device, **options) -> "PushContext":
        """The context of a push by this user from this device (`options`: the other fields)."""
        return cls(user_id=user.id, user_role=user.role, area_id=user.area_id, area_code=user.area.code,
                   device_id=device.id, **options)

    @property
    def user(self) -> User:
        return db.session.get(User, self.user_id)

    @property
    def device(self) -> Device:
        return db.session.get(Device, self.device_id)

    def scope_codes(self) -> frozenset[str]:
        return current_scope(self.user)[1]

    def grace_codes(self) -> frozenset[str]:
        if self._grace_codes is None:
            self._grace_codes = codes_within_grace(self.user, self.grace)
        return self._grace_codes


class Quarantine(Exception):
    """Raised inside apply to refuse a mutation: it is stored for review and reported as quarantined."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(detail)
        self.code, self.detail = code, detail


class Retry(Exception):
    """Raised inside apply when the mutation may succeed later (its incident has not arrived yet)."""

    def __init__(self, code: str, retry_after_s: int):
        super().__init__(code)
        self.code, self.retry_after_s = code, retry_after_s


def apply_in_own_transaction(raw, ctx: PushContext) -> dict:
    """Apply one raw mutation in its own transaction and commit; a race or deadlock is tried again."""
    for attempt in range(1, ATTEMPTS + 1):
        quarantined, outbox = set(ctx.quarantined_incidents), len(ctx.outbox)
        result = commit_unless_raced(lambda: apply_mutation(raw, ctx))
        if result is not None:
            return result
        # The rolled-back attempt's quarantine and outbox messages did not happen. If another request
        # committed the same mutation (or id) first, the next attempt sees its receipt.
        ctx.quarantined_incidents = quarantined
        del ctx.outbox[outbox:]
        log.info("push: attempt %d rolled back, retrying", attempt)
    mutation_id = raw.get("mutation_id") if isinstance(raw, dict) else None
    return {"mutation_id": mutation_id, "status": p.RETRY, "code": "server_busy", "retry_after_s": 5}


def apply_mutation(raw, ctx: PushContext) -> dict:
    """Apply one raw mutation (a dict as sent) and return its result; flushes, never commits."""
    digest = p.body_hash(raw)
    mutation_id = p.parse_uuid(raw.get("mutation_id")) if isinstance(raw, dict) else None
    replay = _replay(raw, digest, ctx, mutation_id)
    if replay is not None:
        return replay
    try:
        mutation = _validate(raw)
    except Quarantine as refusal:
        # A receipt needs a mutation_id and an unused device_seq; without them the quarantine row alone
        # (found again by the body's hash) keeps replays from piling up.
        seq = raw.get("device_seq") if isinstance(raw, dict) else None
        can_receipt = mutation_id is not None and isinstance(seq, int) and seq >= 1 and _seq_free(raw, ctx)
        return _quarantine(raw, digest, ctx, mutation_id, refusal.code, refusal.detail, receipt=can_receipt)
    if not _seq_free(raw, ctx):
        # A concurrent copy of this same request may have committed since the lookup above: that is a replay.
        replay = _replay(raw, digest, ctx, mutation_id)
        if replay is not None:
            return replay
        return _quarantine(raw, digest, ctx, mutation_id, p.DEVICE_SEQ_REUSE,
                           "This device already used this device_seq for another mutation.", receipt=False)
    incident_id = mutation["incident_id"]
    try:
        if incident_id in ctx.quarantined_incidents:
            raise Quarantine(p.DEPENDS_ON_QUARANTINED, "An earlier mutation for this incident was quarantined.")
        result = APPLY[mutation["type"]](mutation, ctx)
    except Quarantine as refusal:
        return _quarantine(raw, digest, ctx, mutation_id, refusal.code, refusal.detail, receipt=True,
                           incident_id=incident_id)
    except Retry as later:
        return {"mutation_id": str(mutation_id), "status": p.RETRY, "code": later.code,
                "retry_after_s": later.retry_after_s}
    result = {"mutation_id": str(mutation_id), "incident_id": str(incident_id), **result}
    _write_receipt(mutation, digest, ctx, result)
    return result


def _replay(raw, digest: str, ctx: PushContext, mutation_id) -> dict | None:
    """Answer a mutation whose receipt exists: `duplicate` with the stored result, or `mutation_id_reuse`."""
    receipt = db.session.get(SyncReceipt, mutation_id) if mutation_id is not None else None
    if receipt is None:
        return None
    if receipt.request_sha256 == digest:
        return {**receipt.result, "status": p.DUPLICATE, "original_status": receipt.status}
    return _quarantine(raw, digest, ctx, mutation_id, p.MUTATION_ID_REUSE,
                       "This mutation_id was used with another body; the first one stands.", receipt=False)


def _validate(raw) -> dict:
    if not isinstance(raw, dict):
        raise Quarantine(p.VALIDATION_FAILED, "A mutation must be a JSON object.")
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise Quarantine(p.VALIDATION_FAILED, "A mutation needs a type.")
    if kind not in MUTATION_SCHEMAS:
        raise Quarantine(p.UNSUPPORTED_TYPE, f"Unknown mutation type {kind!r}; this server knows {list(p.MUTATION_TYPES)}.")
    try:
        return MUTATION_SCHEMAS[kind].load(raw)
    except ValidationError as exc:
        raise Quarantine(p.VALIDATION_FAILED, str(exc.messages)) from exc


def _seq_free(raw: dict, ctx: PushContext) -> bool:
    """Tell whether (device, device_seq) is unused; a used one means a cloned or restored phone store."""
    seq = raw.get("device_seq") if isinstance(raw, dict) else None
    if not isinstance(seq, int):
        return True
    return db.session.scalar(select(SyncReceipt.mutation_id).where(
        SyncReceipt.device_id == ctx.device_id, SyncReceipt.device_seq == seq)) is None


def _write_receipt(mutation: dict, digest: str, ctx: PushContext, result: dict) -> None:
    db.session.add(SyncReceipt(
        mutation_id=mutation["mutation_id"], device_id=ctx.device_id, device_seq=mutation["device_seq"],
        user_id=ctx.user_id, request_sha256=digest, status=result["status"], result=result,
    ))
    db.session.flush()


def _quarantine(raw, digest: str, ctx: PushContext, mutation_id, code: str, detail: str, *, receipt: bool,
                incident_id: uuid.UUID | None = None) -> dict:
    """Store a refused mutation whole (once per body) and answer `quarantined` (terminal)."""
    if incident_id is None and isinstance(raw, dict):
        incident_id = p.parse_uuid(raw.get("incident_id"))
    if incident_id is not None:
        ctx.quarantined_incidents.add(incident_id)
    item = db.session.scalar(select(QuarantineItem).where(
        QuarantineItem.payload_sha256 == digest, QuarantineItem.device_id == ctx.device_id))
    if item is None:
        item = QuarantineItem(
            mutation_id=mutation_id, device_id=ctx.device_id, user_id=ctx.user_id,
            township_id=_township_of(incident_id, ctx), incident_id=incident_id,
            payload=p.scrub(raw if isinstance(raw, dict) else {"raw": raw}), payload_sha256=digest, code=code, detail=detail,
        )
        db.session.add(item)
        db.session.flush()
    result = {"mutation_id": str(mutation_id) if mutation_id else None, "status": p.QUARANTINED, "code": code,
              "detail": detail, "quarantine_id": item.id}
    if receipt:
        seq = raw.get("device_seq")
        db.session.add(SyncReceipt(mutation_id=mutation_id, device_id=ctx.device_id, device_seq=seq,
                                   user_id=ctx.user_id, request_sha256=digest, status=p.QUARANTINED, result=result))
        db.session.flush()
    return result


def _township_of(incident_id, ctx: PushContext) -> int:
    incident = db.session.get(Incident, incident_id) if incident_id else None
    return incident.township_id if incident else ctx.area_id


# --- authorisation --------------------------------------------------------------------------------
def _check_scope(incident: Incident, ctx: PushContext) -> None:
    """A worker may change an incident they reported, or one in their cells (now or within the grace period)."""
    if ctx.trusted or incident.reporter_id == ctx.user_id:
        return
    code = incidents.cell_code(incident)
    if code and (code in ctx.scope_codes() or code in ctx.grace_codes()):
        return
    raise Quarantine(p.OUT_OF_SCOPE, "The incident is outside this worker's cells.")


def _existing(mutation: dict, ctx: PushContext) -> Incident:
    """Lock the mutation's incident, or ask the phone to retry while its create may still arrive."""
    incident = incidents.lock_incident(mutation["incident_id"])
    if incident is not None:
        return incident
    deferral = db.session.get(SyncDeferral, mutation["mutation_id"])
    if deferral is None:
        db.session.add(SyncDeferral(mutation_id=mutation["mutation_id"], first_seen_at=utcnow()))
        db.session.flush()
    elif deferral.first_seen_at < utcnow() - ctx.unknown_incident_window:
        raise Quarantine(p.UNKNOWN_INCIDENT, "Its incident never arrived.")
    raise Retry(p.UNKNOWN_INCIDENT, retry_after_s=60)


# --- the three mutation types -----------------------------------------------------------------------
def _create(mutation: dict, ctx: PushContext) -> dict:
    data = mutation["data"]
    if db.session.get(Incident, mutation["incident_id"]) is not None:
        raise Quarantine(p.ID_COLLISION, "An incident with this id was created by another mutation.")
    _check_photos_immutable(mutation)
    try:
        point, cell = incidents.place(data["location"])
    except GeometryError as exc:
        raise Quarantine(p.VALIDATION_FAILED, exc.message) from exc
    if cell is not None and not ctx.trusted and not cell.code.startswith(ctx.area_code):
        raise Quarantine(p.OUT_OF_SCOPE, "The point lies in another township's grid.")
    incident = incidents.create_incident(
        incident_id=mutation["incident_id"], reporter=ctx.user, device=ctx.device, category_code=data["category"],
        description=data["description"], location=data["location"], gps_accuracy_m=data["gps_accuracy_m"],
        created_at_device=mutation["created_at_device"], clock_suspect=ctx.clock_suspect,
        mutation_id=mutation["mutation_id"], township_id=ctx.area_id, party=data.get("party"), placed=(point, cell),
    )
    declared = _declare_photos(incident, mutation["photos"], ctx)
    # 自动立案 from the phone only: a dispatcher applying a reviewed item decides on registering it.
    registered = None if ctx.trusted else workflow.register_on_arrival(incident, ctx.user_role)
    if registered is not None:
        ctx.outbox.extend(message.id for message in registered.outbox)
    warnings = []
    if incident.is_outside_grid:
        warnings.append("outside_grid")
    if incident.category_id is None:
        warnings.append("unknown_category")
    return {"status": p.APPLIED, "version": incident.version, "case_number": incident.case_number,
            "cell_code": cell.code if cell else None, "warnings": warnings, "photos": declared}


def _check_photos_immutable(mutation: dict) -> None:
    """Refuse, before any effect, a photo whose attachment_id is already declared with other content."""
    for spec in mutation["photos"]:
        try:
            photos.check_declarable(mutation["incident_id"], spec)
        except PhotoImmutable as exc:
            raise Quarantine(p.ATTACHMENT_IMMUTABLE,
                             f"Attachment {spec['attachment_id']} is bound to other content.") from exc


def _declare_photos(incident: Incident, specs: list[dict], ctx: PushContext) -> list[dict]:
    """Declare the mutation's photos; tell the phone which ones it still has to upload."""
    out = []
    for spec in specs:
        photo = photos.declare_photo(incident, spec, user=ctx.user, device_id=ctx.device_id)
        state = photos.photo_state(photo)
        out.append({"attachment_id": str(photo.id), "state": state,
                    "upload": "required" if state == "missing" else "not_needed"})
    return out


def _photo_add(mutation: dict, ctx: PushContext) -> dict:
    incident = _existing(mutation, ctx)
    _check_scope(incident, ctx)
    _check_photos_immutable(mutation)
    return {"status": p.APPLIED, "version": incident.version,
            "photos": _declare_photos(incident, mutation["photos"], ctx)}


def _update(mutation: dict, ctx: PushContext) -> dict:
    incident = _existing(mutation, ctx)
    _check_scope(incident, ctx)
    unknown = sorted(set(mutation["changes"]) - set(WORKER_FIELDS) - set(DISPATCH_FIELDS))
    if unknown:
        raise Quarantine(p.VALIDATION_FAILED, f"Unknown fields {unknown}.")
    # The new values of worker-owned fields pass the same checks as a report (length, ranges, cleaning).
    wanted = {name: change["to"] for name, change in mutation["changes"].items() if name in WORKER_FIELDS}
    try:
        cleaned = IncidentDataSchema(partial=True).load(wanted)
    except ValidationError as exc:
        raise Quarantine(p.VALIDATION_FAILED, str(exc.messages)) from exc
    for name, value in cleaned.items():
        mutation["changes"][name]["to"] = value
    if "location" in cleaned:
        try:
            incidents.place(cleaned["location"])
        except GeometryError as exc:
            raise Quarantine(p.VALIDATION_FAILED, exc.message) from exc
    server = incidents.field_values(incident)
    apply, conflicts = {}, []
    for name, change in sorted(mutation["changes"].items()):
        base, wanted, current = change["from_"], change["to"], server[name]
        if current == wanted:
            continue  # convergent: both sides agree, no conflict
        if incident.voided_at is not None:
            conflicts.append(_conflict(incident, name, base, current, wanted, "edit_after_void", mutation))
        elif name in DISPATCH_FIELDS:
            conflicts.append(_conflict(incident, name, base, current, wanted, "server_kept", mutation))
        elif current == base:
            apply[name] = wanted
        else:  # the worker is on site: their value wins, dispatch's value is kept for review
            apply[name] = wanted
            conflicts.append(_conflict(incident, name, base, current, wanted, "client_applied", mutation))
    lost = {"conflicts": [c.field for c in conflicts]} if conflicts else None
    incidents.change_fields(incident, apply, actor=ctx.user, source="device",
                            mutation_id=mutation["mutation_id"], extra=lost)
    return {
        "status": p.MERGED if conflicts else p.APPLIED, "version": incident.version,
        "conflicts": [{"field": c.field, "resolution": c.resolution, "server_value": c.server_value,
                       "conflict_id": c.id} for c in conflicts],
    }


def _conflict(incident, name, base, server_value, client_value, resolution, mutation) -> SyncConflict:
    conflict = SyncConflict(
        incident_id=incident.id, field=name, base_value=base, server_value=server_value, client_value=client_value,
        resolution=resolution, mutation_id=mutation["mutation_id"],
        state="resolved" if resolution == "server_kept" else "needs_review",
    )
    db.session.add(conflict)
    db.session.flush()
    return conflict


def _note(mutation: dict, ctx: PushContext) -> dict:
    incident = _existing(mutation, ctx)
    _check_scope(incident, ctx)
    if db.session.get(IncidentNote, mutation["note_id"]) is not None:
        raise Quarantine(p.ID_COLLISION, "A note with this id was added by another mutation.")
    incidents.add_note(incident, mutation["note_id"], ctx.user, mutation["text"], mutation["created_at_device"])
    return {"status": p.APPLIED, "version": incident.version, "note_id": str(mutation["note_id"])}


APPLY = {"incident.create": _create, "incident.update": _update, "note.add": _note, "photo.add": _photo_add}
