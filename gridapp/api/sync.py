"""HTTP adapter for sync/: push (sync.bulk: plain creates set-based, the rest a transaction per mutation), pull,
verify, config, review."""
from collections import Counter
from datetime import UTC, datetime, timedelta

from flask import Response, current_app, g, request
from flask_smorest import Blueprint
from sqlalchemy import ARRAY, Uuid, any_, cast, select

from gridapp.api.security import require
from gridapp.errors import CursorInvalid, DeviceDraining, PayloadTooLarge, ProtocolUnsupported
from gridapp.extensions import db
from gridapp.jobs.dispatch import enqueue_outbox
from gridapp.models import PHOTO_TYPES, Incident, IncidentNote, utcnow
from gridapp.services.access import scope_prefix
from gridapp.transactions import commit_if_unchanged
from sync import protocol as p
from sync import pull as pull_
from sync import review
from sync.bulk import push_batch
from sync.devices import record_clock, token_device
from sync.push import PushContext
from sync.schemas import (
    ConflictResolveSchema,
    ConflictSchema,
    PullArgsSchema,
    PullPageSchema,
    PushBatchSchema,
    PushResultSchema,
    QuarantineResolveSchema,
    QuarantineSchema,
    ReviewListArgs,
    VerifySchema,
)

blp = Blueprint("sync", __name__, url_prefix="/api/v1/sync", description="Offline sync for phones")


@blp.route("/config")
@require("sync.pull")
@blp.response(200)
def config():
    """Advertise the protocol version and limits a phone must respect."""
    cfg = current_app.config
    return {
        "protocol_version": p.PROTOCOL_VERSION,
        "mutation_types": list(p.MUTATION_TYPES),
        "max_batch_mutations": cfg["SYNC_MAX_BATCH_MUTATIONS"],
        "max_body_bytes": cfg["MAX_CONTENT_LENGTH"],
        "max_inflated_bytes": cfg["SYNC_MAX_INFLATED_BYTES"],
        "pull_max_limit": cfg["SYNC_PULL_MAX_LIMIT"],
        "access_token_seconds": cfg["DEVICE_ACCESS_TTL_SECONDS"],
        "scope_grace_days": cfg["SYNC_SCOPE_GRACE_DAYS"],
        "unknown_incident_retry_days": cfg["SYNC_UNKNOWN_INCIDENT_DAYS"],
        "gzip": True,
        # Photos (docs/photos.md): declared in mutations, bytes through tus at /api/v1/photos/uploads.
        "photo_types": list(PHOTO_TYPES),
        "photo_max_bytes": cfg["PHOTO_MAX_BYTES"],
        "photo_max_chunk_bytes": cfg["PHOTO_MAX_CHUNK_BYTES"],
    }


def _clock() -> tuple[int | None, bool]:
    """Estimate the device clock's offset from X-Device-Time; never reject for it."""
    header = request.headers.get("X-Device-Time")
    if not header:
        return None, False
    try:
        device_time = datetime.fromisoformat(header.replace("Z", "+00:00"))
        if device_time.tzinfo is None:
            device_time = device_time.replace(tzinfo=UTC)
        offset = int((utcnow() - device_time).total_seconds() * 1000)
    except (ValueError, OverflowError):
        return None, True
    return offset, abs(offset) > p.CLOCK_SUSPECT_MS


@blp.route("/mutations", methods=["POST"])
@require("sync.push")
@blp.arguments(PushBatchSchema)
@blp.response(200, PushResultSchema)
def push(batch):
    """Apply a batch of mutations in order, with a result per item (always 200)."""
    if batch["protocol_version"] != p.PROTOCOL_VERSION:
        raise ProtocolUnsupported(supported=[p.PROTOCOL_VERSION])
    limit = current_app.config["SYNC_MAX_BATCH_MUTATIONS"]
    if len(batch["mutations"]) > limit:
        raise PayloadTooLarge(f"At most {limit} mutations per batch.", limit_mutations=limit)
    principal = g.principal  # who pushes, and their device: read with the token, no other statement
    device_id = token_device(principal)
    offset, suspect = _clock()
    if offset is not None and record_clock(principal, offset):
        db.session.commit()  # the clock record stands whatever the batch does
    cfg = current_app.config
    ctx = PushContext(user_id=principal.user_id, user_role=principal.role, area_id=principal.area_id,
                      area_code=principal.area_code, device_id=device_id, clock_suspect=suspect,
                      grace=timedelta(days=cfg["SYNC_SCOPE_GRACE_DAYS"]),
                      unknown_incident_window=timedelta(days=cfg["SYNC_UNKNOWN_INCIDENT_DAYS"]))
    results = push_batch(batch["mutations"], ctx, set_based=cfg["SYNC_BULK_PUSH"])
    enqueue_outbox(ctx.outbox)  # reports registered on arrival: their route jobs, after their commits
    _add_applied_seq(results, ctx.applied_seqs)
    # End with COMMIT, not the teardown's ROLLBACK, after which psycopg forgets its prepared statements.
    commit_if_unchanged()
    return {"results": results, "server_time": utcnow(), "clock_offset_ms": offset, "clock_suspect": suspect}


def _add_applied_seq(results: list[dict], known: dict) -> None:
    """Tell the phone the sync position of each effect: once its cursor passes it, its overlay can go.

    `known`: incident id → sync_seq of the creates applied set-based (stamped before their COMMIT), which
    holds unless a later item of the batch changed the incident; the others are read after their COMMIT.
    """
    items = Counter(_uuid(r.get("incident_id")) for r in results)
    seqs = {incident_id: seq for incident_id, seq in known.items() if items[incident_id] == 1}
    incident_ids = set(items) - {None} - seqs.keys()
    note_ids = {_uuid(r.get("note_id")) for r in results} - {None}
    if incident_ids:
        # = ANY(array), not IN: one statement text whatever the batch's size
        seqs.update(db.session.execute(select(Incident.id, Incident.sync_seq).where(
            Incident.id == any_(cast(list(incident_ids), ARRAY(Uuid))))).all())
    if note_ids:
        seqs.update(db.session.execute(select(IncidentNote.id, IncidentNote.sync_seq).where(
            IncidentNote.id == any_(cast(list(note_ids), ARRAY(Uuid))))).all())
    for result in results:
        seq = seqs.get(_uuid(result.get("note_id")) or _uuid(result.get("incident_id")))
        if seq is not None and result["status"] != p.QUARANTINED:
            result["applied_seq"] = seq


def _uuid(value):
    return p.parse_uuid(value) if value else None


def _state(cursor: str, device_id) -> dict:
    """A cursor's state, checked: signed by this server, for this device and protocol version."""
    try:
        state = p.decode_cursor(cursor, current_app.config["SECRET_KEY"].encode())
    except p.CursorInvalid as exc:
        raise CursorInvalid() from exc
    if state.get("d") != str(device_id) or state.get("v") != p.PROTOCOL_VERSION:
        raise CursorInvalid()
    return state


@blp.before_request
def _pull_snapshot():
    # A pull page reads one REPEATABLE READ snapshot from the request's first statement on, authentication
    # included: one transaction, no commit to start the snapshot, no second reading of device and user.
    if request.endpoint == "sync.changes":
        pull_.start_snapshot()


@blp.route("/changes")
@require("sync.pull")
@blp.arguments(PullArgsSchema, location="query")
@blp.response(200, PullPageSchema)
def changes(args):
    """Return the next page of changes in the phone's scope; follow next_cursor until has_more is false."""
    ctx = pull_.context(g.principal.token_id)
    if ctx.device_state == "draining":
        raise DeviceDraining(wipe_after_drain=True)
    state = _state(args["cursor"], ctx.device_id) if args["cursor"] is not None else pull_.initial_state(ctx)
    limit = min(args["limit"] or current_app.config["SYNC_PULL_DEFAULT_LIMIT"], current_app.config["SYNC_PULL_MAX_LIMIT"])
    page = pull_.changes(state, ctx, limit)
    db.session.commit()  # the acknowledged position
    # The changes arrive as JSON text from PostgreSQL; splice them rather than parse and re-dump.
    return Response(page.body(p.encode_cursor(page.cursor_state, _key()), utcnow()), mimetype="application/json")


def _key() -> bytes:
    return current_app.config["SECRET_KEY"].encode()


@blp.route("/verify", methods=["POST"])
@require("sync.pull")
@blp.arguments(VerifySchema)
@blp.response(200)
def verify(body):
    """Compare the phone's per-bucket digests with the server's; a mismatch comes with a repair cursor."""
    state = _state(body["cursor"], token_device(g.principal))
    outcome = pull_.verify(state, g.user, body["buckets"])
    if "repair_state" in outcome:
        outcome["repair_cursor"] = p.encode_cursor(outcome.pop("repair_state"), _key())
    return outcome


# --- review, for the dispatch centre ----------------------------------------------------------------
@blp.route("/quarantine")
@require("sync.review")
@blp.arguments(ReviewListArgs, location="query")
@blp.response(200, QuarantineSchema(many=True))
def list_quarantine(args):
    """List quarantined mutations (with their payloads) from the caller's area."""
    return review.quarantine_in_scope(scope_prefix(g.principal), state=args["state"] if args["state"] != "all" else None)


@blp.route("/quarantine/<int:item_id>/resolve", methods=["POST"])
@require("sync.review")
@blp.arguments(QuarantineResolveSchema)
@blp.response(200)
def resolve_quarantine(body, item_id):
    """Apply, edit and apply, or discard a quarantined mutation, with a reason (audited)."""
    outcome = review.resolve_quarantine(item_id, scope_prefix(g.principal), g.user, body["action"], body["reason"],
                                        body["payload"])
    db.session.commit()
    return outcome


@blp.route("/conflicts")
@require("sync.review")
@blp.arguments(ReviewListArgs, location="query")
@blp.response(200, ConflictSchema(many=True))
def list_conflicts(args):
    """List merge conflicts on incidents in the caller's area."""
    state = {"open": "needs_review", "all": None}.get(args["state"], args["state"])
    return review.conflicts_in_scope(scope_prefix(g.principal), state=state)


@blp.route("/conflicts/<int:conflict_id>/resolve", methods=["POST"])
@require("sync.review")
@blp.arguments(ConflictResolveSchema)
@blp.response(200)
def resolve_conflict(body, conflict_id):
    """Accept the applied value or restore the other side's, with a reason (audited)."""
    outcome = review.resolve_conflict(conflict_id, scope_prefix(g.principal), g.user, body["action"], body["reason"])
    db.session.commit()
    return outcome
