"""Dispatch jobs: run outbox messages (route, notify, request a check), deliver webhooks, sweep what
was never enqueued or whose job was lost, and escalate overdue cases. Every job is safe to run twice."""
import hashlib
import hmac
import http.client
import json
import logging
import select as select_module
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import NamedTuple
from urllib.parse import urlsplit

from flask import current_app
from redis.exceptions import RedisError
from rq import Retry
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import selectinload

from gridapp.extensions import db, redis_store
from gridapp.jobs import enqueue, enqueue_many
from gridapp.models import GridCell, Incident, Notification, OutboxMessage, Squad, utcnow
from gridapp.services import incidents, routing, workflow

log = logging.getLogger(__name__)

DELIVERY_INTERVALS = [5, 15, 60, 300]  # seconds between webhook attempts; then the notification is dead
# What a failed webhook attempt raises (a refused or timed-out connection, a non-2xx answer, no webhook).
DELIVERY_ERRORS = (OSError, http.client.HTTPException, RuntimeError)


def _job_id(prefix: str, row_id: int) -> str:
    # A fresh id per enqueue: a re-enqueue never collides with a job RQ still tracks (or a killed one).
    return f"{prefix}-{row_id}-{time.time_ns()}"


# One drain job waits in the queue at a time: this key is set (NX) by whoever enqueues it and deleted by the
# job when it starts, before it looks for messages. A message committed before a failed SET NX is therefore
# seen by the drain job that holds the key. The expiry only bounds a stall if that job was lost with Redis;
# the sweeper covers that too.
DRAIN_KEY = "gridapp:outbox:drain-pending"
DRAIN_KEY_TTL = 10  # seconds
DRAIN_MAX_MESSAGES = 100  # per drain round; a longer backlog continues in the next job
DRAIN_BATCH = 4  # messages per transaction when several wait (the first webhook waits for the others' routing)
# A drain job that ran out of messages takes the key back and lingers (OUTBOX_DRAIN_LINGER_SECONDS): a
# request that finds the key taken pushes a token here, which wakes it. Before it ends it deletes the key
# and looks once more, so a message whose request found the key taken is never left behind.
DRAIN_WAKE_KEY = "gridapp:outbox:drain-wake"
DRAIN_JOB_SECONDS = 20  # a lingering job ends after this long (well inside RQ's job timeout); the next request starts another

# SET NX the drain key; when it is taken, wake the job that holds it (one round trip either way). 1: set.
_REQUEST_DRAIN = """
if redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[1]) then return 1 end
redis.call('LPUSH', KEYS[2], 1)
redis.call('LTRIM', KEYS[2], 0, 0)
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 0"""


def enqueue_outbox(message_ids) -> None:
    """After a commit that wrote outbox messages: make sure a drain job will run them (one Redis command
    when one is already waiting or lingering). What cannot be enqueued now is found again by the sweeper."""
    if message_ids:
        _request_drain()


def _request_drain() -> None:
    connection = redis_store.connection
    try:
        if connection.register_script(_REQUEST_DRAIN)(keys=[DRAIN_KEY, DRAIN_WAKE_KEY], args=[DRAIN_KEY_TTL]):
            try:
                enqueue(drain_outbox, job_id=_job_id("outbox-drain", 0), result_ttl=0)
            except RedisError:
                connection.delete(DRAIN_KEY)
                raise
    except RedisError:  # Redis down: the commit already happened, the sweeper enqueues the messages later
        log.warning("could not enqueue the outbox drain; the sweeper will")


def enqueue_messages(message_ids) -> None:
    """Enqueue a job per outbox message (the sweeper's way: each one is tried, and fails, on its own)."""
    for message_id in message_ids:
        try:
            enqueue(process_outbox_message, message_id, job_id=_job_id("outbox", message_id), result_ttl=0)
        except RedisError:
            log.warning("could not enqueue outbox message %s; the sweeper will", message_id)
            return


def drain_outbox() -> str:
    """Run the young unprocessed outbox messages, oldest first, until none is left: up to DRAIN_BATCH in one
    transaction (with the messages they create, as `process_outbox_message`), their first deliveries right
    after its commit. Then linger for more (OUTBOX_DRAIN_LINGER_SECONDS, woken through Redis) and drain again.

    Under load one job serves many reports, so RQ's per-job cost (~40 Redis commands) and a transaction's
    fixed statements are paid once per batch instead of once per report; lingering does the same for a
    steady trickle. Two drain jobs never take the same message (FOR UPDATE SKIP LOCKED). A batch that fails
    is run again one message per transaction, and a message failing on its own is left to the sweeper (older
    than OUTBOX_SWEEP_AFTER_SECONDS it is no longer a drain's), which gives it a job of its own."""
    connection = redis_store.connection
    linger = current_app.config["OUTBOX_DRAIN_LINGER_SECONDS"]
    ends = time.monotonic() + DRAIN_JOB_SECONDS
    counts = {"done": 0, "failed": set()}  # failed: message ids, not retried by this job (the sweeper's)
    while True:
        # From now on a new message requests another drain (which may run beside this one); a wake-up
        # token from before is answered by this round.
        connection.pipeline(transaction=False).delete(DRAIN_KEY).delete(DRAIN_WAKE_KEY).execute()
        if not _drain_round(counts):
            _request_drain()  # a long backlog: the rest in another job
            break
        if linger <= 0 or time.monotonic() > ends or not _wait_for_messages(connection, linger, counts["failed"]):
            break
    return f"{counts['done']} done, {len(counts['failed'])} failed"


def _wait_for_messages(connection, linger: float, failed: set[int]) -> bool:
    """Hold the drain key and wait up to `linger` seconds for a request to wake us; True when one did. If
    another drain job took the key meanwhile, that one serves what comes: False. Before giving up, the key
    is deleted and the caller looks once more, so what a request found taken is not left behind."""
    try:
        if not connection.set(DRAIN_KEY, 1, nx=True, ex=DRAIN_KEY_TTL):
            return False
        woken = connection.blpop([DRAIN_WAKE_KEY], timeout=linger) is not None
        if not woken:
            connection.delete(DRAIN_KEY)
    except RedisError:  # Redis went away: requests fail too, and the sweeper covers their messages
        log.warning("the outbox drain stopped lingering: Redis is unavailable")
        return False
    if woken:
        return True
    found = db.session.scalar(select(OutboxMessage.id).where(*_drainable(failed)).limit(1))
    db.session.rollback()
    return found is not None


def _drainable(failed: set[int]) -> list:
    """The drain's messages: young and unprocessed, but not those that failed in this job."""
    young = utcnow() - timedelta(seconds=current_app.config["OUTBOX_SWEEP_AFTER_SECONDS"])
    return [OutboxMessage.processed_at.is_(None), OutboxMessage.created_at > young,
            *([OutboxMessage.id.not_in(failed)] if failed else [])]


def _drain_round(counts: dict) -> bool:
    """Run the young unprocessed messages until none is left (False: stopped at DRAIN_MAX_MESSAGES)."""
    after, handled = 0, 0
    while handled < DRAIN_MAX_MESSAGES:
        messages = db.session.scalars(select(OutboxMessage).where(*_drainable(counts["failed"]), OutboxMessage.id > after)
            .order_by(OutboxMessage.id).limit(DRAIN_BATCH).with_for_update(skip_locked=True)).all()
        if not messages:
            db.session.rollback()
            return True
        ids = [m.id for m in messages]
        after = ids[-1]
        handled += len(ids)
        try:
            _process(messages)
            counts["done"] += len(ids)
            if len(ids) < DRAIN_BATCH:
                # That was all: a message committed after the key was deleted requested a drain of its own.
                return True
            continue
        except Exception:  # noqa: BLE001 - isolated below; the sweeper retries it in a job of its own
            db.session.rollback()
            if len(ids) == 1:
                log.exception("outbox message %s failed in the drain; the sweeper will retry it", after)
                counts["failed"].add(after)
                continue
        for message_id in ids:  # the batch failed: one per transaction, so only the failing one is left
            try:
                counts["done"] += process_outbox_message(message_id) == "done"
            except Exception:  # noqa: BLE001
                db.session.rollback()
                log.exception("outbox message %s failed in the drain; the sweeper will retry it", message_id)
                counts["failed"].add(message_id)
    return False


def process_outbox_message(message_id: int) -> str:
    """Run one outbox message once (a second run finds it processed), with the messages it creates on
    the way (a route that auto-dispatches writes a notify message), then deliver the notifications."""
    message = db.session.scalar(select(OutboxMessage).where(OutboxMessage.id == message_id)
                                .with_for_update(skip_locked=True))
    if message is None or message.processed_at is not None:
        db.session.rollback()
        return "skipped"
    _process([message])
    return "done"


def _process(messages: list[OutboxMessage]) -> None:
    """Run locked, unprocessed messages with their follow-ups, commit, then make the first deliveries."""
    notifications = [n for message in messages for n in _run_with_follow_ups(message)]
    db.session.commit()
    # After the commit, so the rows are there for anyone; the sweeper covers a crash right here.
    deliver_now(notifications)


def _run_with_follow_ups(message: OutboxMessage) -> list[int]:
    """Run a message and, in the same transaction, the outbox messages its handler created: they are ours
    until we commit, and a job per step would cost a queue round trip each (route → dispatch → notify).
    Return the notifications created."""
    pending, notifications, ran = [message], [], []
    while pending:
        current = pending.pop(0)
        follow_ups = HANDLERS[current.kind](current) or FollowUps()
        ran.append(current)
        pending.extend(follow_ups.outbox)
        notifications.extend(follow_ups.notifications)
    now = utcnow()
    for current in ran:  # last: the messages' UPDATEs go out together (one executemany at the next flush)
        current.attempts += 1
        current.processed_at = now
    return notifications


@dataclass
class FollowUps:
    """Work a handler created: outbox messages (run in the same job and transaction) and notifications
    (delivered once that transaction commits)."""

    outbox: list[OutboxMessage] = field(default_factory=list)
    notifications: list["FirstDelivery"] = field(default_factory=list)


@dataclass(frozen=True)
class FirstDelivery:
    """A notification whose first delivery attempt follows the commit. `written` is set when this
    transaction wrote it: the attempt then posts what was written, without reloading or locking the row
    (nothing else delivers a notification that young: the sweeper waits OUTBOX_SWEEP_AFTER_SECONDS, which
    is far longer than a POST may take). None: an earlier run wrote it, and the attempt takes the locked way."""

    id: int
    written: "tuple[SquadWebhook, dict] | None" = None  # where it goes, and the row's values


class SquadWebhook(NamedTuple):
    """A squad's webhook, read before the commit (which expires the squad's row)."""

    code: str
    webhook_url: str | None
    webhook_secret: str | None


def _route(message: OutboxMessage) -> "FollowUps | None":
    incident = incidents.lock_incident(message.incident_id)  # once, for the route and the dispatch
    if incident.status != "registered":
        return None
    # No flush until the dispatch's own: the case's update and both events go to the database together.
    with db.session.no_autoflush:
        rule, why = routing.route(incident)
        incident.routed_rule_id = rule.id if rule else None
        incident.is_ownerless = rule is None
        workflow.record_event(incident, "incident.route", {"rule_id": rule.id if rule else None, "explanation": why})
        if not (rule and rule.auto_dispatch):
            return None
        event = workflow.perform_locked(incident, "dispatch", None, params={
            "squad_code": rule.squad.code, "rule_id": rule.id, "rule_squad": rule.squad})
    return FollowUps(outbox=event.outbox)


def _notify(message: OutboxMessage) -> "FollowUps | None":
    incident = message.incident  # already loaded when the dispatch ran in this job
    if incident.assigned_squad_id is None:
        return None
    row = _notification_row(incident, "incident.dispatched", f"dispatch:{incident.id}:{message.event_id}")
    written = _insert_notifications([row])
    if written:
        squad = incident.squad
        webhook = SquadWebhook(squad.code, squad.webhook_url, squad.webhook_secret)
        return FollowUps(notifications=[FirstDelivery(written[0], (webhook, row))])
    return FollowUps(notifications=[FirstDelivery(_notification(incident, row["kind"], row["idempotency_key"]))])


def _request_check(message: OutboxMessage) -> None:
    incident = db.session.get(Incident, message.incident_id)
    if incident.status == "handled":
        workflow.perform(incident.id, "request_check", None, prefix="")
    return None


HANDLERS = {"route": _route, "notify": _notify, "request_check": _request_check}


def _notification(incident: Incident, kind: str, key: str) -> int:
    """Write a notification once per idempotency key; return its id (the existing one's on a second run)."""
    return _notifications([(incident, kind, key)])[0]


def _notifications(items: list[tuple[Incident, str, str]]) -> list[int]:
    """Write notifications (case, kind, idempotency key) in one statement, each key once; return their ids,
    those written before included. The case's cell and squad should be loaded (their codes go in the body)."""
    if not items:
        return []
    rows = [_notification_row(incident, kind, key) for incident, kind, key in items]
    ids = _insert_notifications(rows)
    if len(ids) < len(rows):  # some were written by an earlier run
        ids = list(db.session.scalars(select(Notification.id).where(
            Notification.idempotency_key.in_([r["idempotency_key"] for r in rows])).order_by(Notification.id)))
    return ids


def _notification_row(incident: Incident, kind: str, key: str) -> dict:
    return {"idempotency_key": key, "squad_id": incident.assigned_squad_id, "incident_id": incident.id, "kind": kind,
            "body": _body(incident, kind, key)}


def _insert_notifications(rows: list[dict]) -> list[int]:
    """INSERT the rows whose key is new; return the ids of those written (in order)."""
    return list(db.session.scalars(insert(Notification).values(rows)
                                   .on_conflict_do_nothing(index_elements=[Notification.idempotency_key])
                                   .returning(Notification.id)))


def _body(incident: Incident, kind: str, key: str) -> dict:
    return {
        "event": kind, "idempotency_key": key, "incident_id": str(incident.id), "case_number": incident.case_number,
        "category": incident.category_code_raw, "description": incident.description,
        "location": incident.raw_location, "cell_code": incident.cell.code if incident.cell else None,
        "status": incident.status, "due_at": incident.due_at.isoformat() if incident.due_at else None,
        "squad": incident.squad.code if incident.squad else None,
    }


def deliver_notification(notification_id: int) -> str:
    """POST a notification to its squad's webhook (HMAC-signed, with its idempotency key); retried with
    backoff by RQ; after the last attempt it becomes a dead letter a dispatcher can retry."""
    outcome = _deliver([notification_id])[notification_id]
    if isinstance(outcome, Exception):
        raise outcome  # RQ retries with the next interval
    return outcome


def _deliver(notification_ids: list[int]) -> dict[int, "str | Exception"]:
    """Make one delivery attempt for each pending notification among these, locked together (one statement)
    and committed together after the POSTs; return per id "sent", "dead", "skipped" (not pending, or
    locked by another delivery) or the failed attempt's exception (to be retried)."""
    outcomes: dict[int, str | Exception] = dict.fromkeys(notification_ids, "skipped")
    rows = db.session.execute(select(Notification, Squad).join(Squad, Squad.id == Notification.squad_id)
                              .where(Notification.id.in_(notification_ids), Notification.state == "pending")
                              .order_by(Notification.id).with_for_update(of=Notification, skip_locked=True)).all()
    if not rows:
        db.session.rollback()
        return outcomes
    for notification, squad in rows:
        notification.attempts += 1
        notification.enqueued_at = utcnow()
        try:
            _post(squad, notification.idempotency_key, notification.kind, notification.body)
        except DELIVERY_ERRORS as exc:
            notification.last_error = str(exc)[:500]
            if notification.attempts > len(DELIVERY_INTERVALS):
                notification.state = outcomes[notification.id] = "dead"
                log.warning("notification %s is dead after %d attempts", notification.id, notification.attempts)
            else:
                outcomes[notification.id] = exc
            continue
        notification.state, notification.sent_at, notification.last_error = "sent", utcnow(), None
        outcomes[notification.id] = "sent"
    db.session.commit()
    return outcomes


def _post(squad: "Squad | SquadWebhook", key: str, kind: str, content: dict) -> None:
    """POST a notification to the squad's webhook; raise one of DELIVERY_ERRORS if that failed."""
    if not squad.webhook_url:
        raise RuntimeError(f"squad {squad.code} has no webhook configured")
    body = json.dumps(content, ensure_ascii=False, sort_keys=True).encode()
    signature = hmac.new((squad.webhook_secret or "").encode(), body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "Idempotency-Key": key,
               "X-Gridapp-Signature": f"sha256={signature}", "X-Gridapp-Event": kind}
    status = _WEBHOOKS.post(squad.webhook_url, body, headers, current_app.config["WEBHOOK_TIMEOUT_SECONDS"])
    if status >= 300:
        raise WebhookRefused(f"webhook answered {status}")


class WebhookRefused(OSError):
    """The receiver answered, but not with a 2xx (an OSError, as urllib's HTTPError was)."""


class WebhookConnections(threading.local):
    """One keep-alive HTTP/1.1 connection per webhook host, kept per worker thread: a delivery reuses it
    instead of a new TCP connection (and urllib's request machinery) per POST. A connection the receiver
    closed while idle is noticed before reuse; one that fails on reuse before any answer is replaced and
    the POST sent once more on a fresh connection (the receiver recognises a repeat by its idempotency key,
    as with any at-least-once delivery). Timeouts and answers are the caller's, as before."""

    def __init__(self):
        self.connections: dict[tuple[str, str, int], http.client.HTTPConnection] = {}

    def post(self, url: str, body: bytes, headers: dict, timeout: float) -> int:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RuntimeError(f"webhook URL {url!r} is not http(s)")
        key = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection = self.connections.get(key)
        if connection is not None and (connection.sock is None or _readable(connection.sock)):
            connection.close()  # closed by the receiver while idle
            connection = None
        for reused in ((True, False) if connection is not None else (False,)):
            if connection is None:
                cls = http.client.HTTPSConnection if key[0] == "https" else http.client.HTTPConnection
                connection = self.connections[key] = cls(key[1], key[2], timeout=timeout)
            connection.timeout = timeout
            if connection.sock is not None:
                connection.sock.settimeout(timeout)
            try:
                connection.request("POST", path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._drop(key)
                connection = None
                if reused:
                    continue  # the idle connection died under us: once more on a new one
                raise
            except (OSError, http.client.HTTPException):
                self._drop(key)
                raise
            if response.will_close:
                self._drop(key)
            return response.status
        raise AssertionError("unreachable")

    def _drop(self, key) -> None:
        connection = self.connections.pop(key, None)
        if connection is not None:
            connection.close()


def _readable(sock) -> bool:
    """An idle keep-alive socket that is readable has been closed (or written to) by the other side."""
    return bool(select_module.select([sock], [], [], 0)[0])


_WEBHOOKS = WebhookConnections()


def deliver_now(deliveries: list[FirstDelivery]) -> None:
    """Make the first delivery attempts in the current job; those that fail continue (with the same backoff)
    as jobs of their own. Saves a queue round trip per notification on the common path."""
    if not deliveries:
        return
    outcomes = _deliver([d.id for d in deliveries if d.written is None]) \
        if any(d.written is None for d in deliveries) else {}
    outcomes.update(_deliver_written([d for d in deliveries if d.written is not None]))
    for notification_id, outcome in outcomes.items():
        if isinstance(outcome, Exception):
            enqueue_delivery(notification_id, attempts_made=1)


_FIRST_ATTEMPT = update(Notification.__table__).where(
    Notification.__table__.c.id == bindparam("notification_id"), Notification.__table__.c.state == "pending",
    Notification.__table__.c.attempts == 0)


def _deliver_written(deliveries: list[FirstDelivery]) -> dict[int, "str | Exception"]:
    """The first attempt for notifications this job just wrote and committed: POST what was written, then
    record the outcomes in one statement (still pending, never attempted: a row the sweeper's job took
    meanwhile keeps that job's record)."""
    if not deliveries:
        return {}
    outcomes, records, now = {}, [], utcnow()
    for delivery in deliveries:
        squad, row = delivery.written
        record = {"notification_id": delivery.id, "attempts": 1, "enqueued_at": now, "state": "pending",
                  "sent_at": None, "last_error": None}
        try:
            _post(squad, row["idempotency_key"], row["kind"], row["body"])
        except DELIVERY_ERRORS as exc:
            record["last_error"] = str(exc)[:500]
            outcomes[delivery.id] = exc
        else:
            record.update(state="sent", sent_at=utcnow())
            outcomes[delivery.id] = "sent"
        records.append(record)
    db.session.execute(_FIRST_ATTEMPT, records)  # one executemany; the columns in `records` are SET
    db.session.commit()
    return outcomes


def enqueue_delivery(notification_id: int, attempts_made: int = 0) -> None:
    """Enqueue a webhook delivery with retries and backoff (continuing the schedule after `attempts_made`
    attempts); if Redis is down the sweeper does it later."""
    delay = DELIVERY_INTERVALS[attempts_made - 1] if attempts_made else 0
    intervals = DELIVERY_INTERVALS[attempts_made:]
    try:
        enqueue(deliver_notification, notification_id, job_id=_job_id("notify", notification_id),
                delay_seconds=delay, retry=Retry(max=len(intervals), interval=intervals) if intervals else None)
    except RedisError:
        log.warning("could not enqueue notification %s; the sweeper will", notification_id)


def enqueue_deliveries(notification_ids: list[int]) -> None:
    """Enqueue many first delivery attempts at once (with the full backoff); if Redis is down the sweeper does it."""
    if not notification_ids:
        return
    try:
        enqueue_many(deliver_notification, [(_job_id("notify", i), (i,)) for i in notification_ids],
                     retry=Retry(max=len(DELIVERY_INTERVALS), interval=DELIVERY_INTERVALS))
    except RedisError:
        log.warning("could not enqueue %d notifications; the sweeper will", len(notification_ids))


def sweep() -> dict:
    """Re-enqueue outbox messages and pending notifications that went quiet (never enqueued because Redis
    was down, or their job died with a killed worker). The jobs' row locks and state checks make a second
    run harmless, so this needs no knowledge of RQ's registries."""
    quiet = utcnow() - timedelta(seconds=current_app.config["OUTBOX_SWEEP_AFTER_SECONDS"])
    messages = db.session.scalars(select(OutboxMessage).where(
        OutboxMessage.processed_at.is_(None),
        func.coalesce(OutboxMessage.enqueued_at, OutboxMessage.created_at) < quiet).with_for_update(skip_locked=True)).all()
    notifications = db.session.scalars(select(Notification).where(
        Notification.state == "pending",
        func.coalesce(Notification.enqueued_at, Notification.created_at) < quiet).with_for_update(skip_locked=True)).all()
    now = utcnow()
    for row in (*messages, *notifications):
        row.enqueued_at = now
    message_ids, notification_ids = [m.id for m in messages], [n.id for n in notifications]
    db.session.commit()
    enqueue_messages(message_ids)
    enqueue_deliveries(notification_ids)
    return {"outbox": len(message_ids), "notifications": len(notification_ids)}


ESCALATION_BATCH = 500  # cases per transaction: a backlog never becomes one huge, lock-holding commit


def escalate_overdue() -> dict:
    """Warn squads of cases due soon and flag overdue ones for the duty chief (once each), in batches."""
    totals = {"due_soon": 0, "overdue": 0}
    while True:
        counts = _escalate_batch()
        totals = {k: totals[k] + counts[k] for k in totals}
        if counts["due_soon"] + counts["overdue"] < ESCALATION_BATCH:
            return totals


def _escalate_batch() -> dict:
    now = utcnow()
    warn_before = timedelta(seconds=current_app.config["DUE_SOON_WARNING_SECONDS"])
    active = (Incident.status.in_(("dispatched", "handling")), Incident.due_at.is_not(None))
    # The cell's code and the squad come along (one statement each per batch) for the notifications' bodies.
    names = (selectinload(Incident.cell).load_only(GridCell.code), selectinload(Incident.squad))
    overdue = db.session.scalars(select(Incident).options(*names)
                                 .where(*active, Incident.overdue_at.is_(None), Incident.due_at <= now)
                                 .order_by(Incident.due_at).limit(ESCALATION_BATCH)
                                 .with_for_update(skip_locked=True, key_share=True)).all()
    due_soon = db.session.scalars(select(Incident).options(*names)
                                  .where(*active, Incident.warned_at.is_(None),
                                         Incident.due_at > now, Incident.due_at <= now + warn_before)
                                  .order_by(Incident.due_at).limit(ESCALATION_BATCH - len(overdue))
                                  .with_for_update(skip_locked=True, key_share=True)).all()
    notifications = []
    with db.session.no_autoflush:  # the batch's updates and events go out together, not one flush per case
        for incident in due_soon:
            incident.warned_at = now
            workflow.record_event(incident, "incident.due_soon", {"due_at": incident.due_at.isoformat()})
            notifications.append((incident, "incident.due_soon", f"due_soon:{incident.id}:{incident.due_at.isoformat()}"))
        for incident in overdue:
            incident.overdue_at = now
            incident.supervision_level = max(incident.supervision_level or 0, 1)  # 超时督办
            workflow.record_event(incident, "incident.overdue", {"due_at": incident.due_at.isoformat()})
            notifications.append((incident, "incident.overdue", f"overdue:{incident.id}:{incident.due_at.isoformat()}"))
    created = _notifications(notifications)
    db.session.commit()
    enqueue_deliveries(created)
    return {"due_soon": len(due_soon), "overdue": len(overdue)}
