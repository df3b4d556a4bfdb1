"""Pull: the changes in a phone's scope after its cursor, in commit order, compacted, with evictions,
re-scoping (evict + backfill) and an integrity check. Runs in one REPEATABLE READ snapshot."""
from dataclasses import dataclass

from sqlalchemy import bindparam, select, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import selectinload
from sqlalchemy.types import BigInteger, String

from gridapp.extensions import db
from gridapp.models import Category, Device, SyncCounter, User
from gridapp.services.scope import current_scope, scope_at
from sync import protocol as p

# One incident as phones see it. The location is the fix as sent (raw) plus its WGS84 conversion.
_INCIDENT_COLUMNS = """
    i.id, i.sync_seq, i.version, i.case_number, i.status, i.category_code_raw, i.description, i.raw_location,
    ST_X(i.location) AS lon, ST_Y(i.location) AS lat, i.gps_accuracy_m, c.code AS cell_code,
    i.is_outside_grid, i.priority, i.assigned_squad_id, u.username AS reporter, i.reporter_id,
    i.created_at_device, i.received_at, i.updated_at, i.voided_at, i.due_at, tu.username AS task_user"""
_INCIDENT_FROM = """
FROM incidents i
LEFT JOIN grid_cells c ON c.id = i.cell_id
JOIN users u ON u.id = i.reporter_id
LEFT JOIN users tu ON tu.id = i.task_user_id"""

# Incremental: per scoped cell (any version of its code) and for the reporter's own incidents, the
# first :limit rows in the window (:seq, :until] by the (cell_id|reporter_id, sync_seq) indexes; then the
# overall first :limit. The window keeps each per-cell scan short when a scope holds many busy cells
# (without it the first page of a dense scope reads every scoped row after the cursor); see _incremental.
_INCREMENTAL_SQL = text(f"""
SELECT {_INCIDENT_COLUMNS}
{_INCIDENT_FROM}
WHERE i.id IN (
    SELECT s.id FROM (
        SELECT x.id, x.sync_seq FROM unnest(CAST(:cell_ids AS bigint[])) AS cid(id)
        CROSS JOIN LATERAL (SELECT id, sync_seq FROM incidents WHERE cell_id = cid.id AND sync_seq > :seq
                            AND sync_seq <= :until ORDER BY sync_seq LIMIT :limit) x
        UNION
        SELECT id, sync_seq FROM (SELECT id, sync_seq FROM incidents WHERE reporter_id = :uid AND sync_seq > :seq
                                  AND sync_seq <= :until ORDER BY sync_seq LIMIT :limit) own
        ORDER BY sync_seq LIMIT :limit) s)
ORDER BY i.sync_seq
""").bindparams(bindparam("cell_ids", type_=ARRAY(BigInteger)))

_NOTES_SQL = text("""
SELECT n.id, n.sync_seq, n.incident_id, n.text, u.username AS author, n.created_at_device, n.created_at
FROM incident_notes n
JOIN incidents i ON i.id = n.incident_id
JOIN users u ON u.id = n.author_id
WHERE n.sync_seq > :seq AND n.sync_seq <= :until
  AND (i.cell_id = ANY(CAST(:cell_ids AS bigint[])) OR i.reporter_id = :uid)
ORDER BY n.sync_seq
LIMIT :limit
""").bindparams(bindparam("cell_ids", type_=ARRAY(BigInteger)))

_EXITS_SQL = text("""
SELECT e.incident_id, e.sync_seq FROM sync_scope_exits e JOIN incidents i ON i.id = e.incident_id
WHERE e.sync_seq > :seq AND e.old_cell_code = ANY(:codes)
  AND (e.new_cell_code IS NULL OR NOT e.new_cell_code = ANY(:codes)) AND i.reporter_id <> :uid
ORDER BY e.sync_seq LIMIT :limit
""").bindparams(bindparam("codes", type_=ARRAY(String)))

# Backfill after gaining cells: every incident in those cells (with its notes up to the cursor), keyset by id;
# an incident changed after the cursor comes again in the incremental stream (upserts are idempotent).
_BACKFILL_SQL = text(f"""
SELECT {_INCIDENT_COLUMNS}
{_INCIDENT_FROM}
WHERE i.cell_id = ANY(CAST(:cell_ids AS bigint[])) AND CAST(i.id AS text) > :after
ORDER BY CAST(i.id AS text)
LIMIT :limit
""").bindparams(bindparam("cell_ids", type_=ARRAY(BigInteger)))

_CELL_IDS_SQL = text("SELECT id FROM grid_cells WHERE code = ANY(:codes)").bindparams(
    bindparam("codes", type_=ARRAY(String)))

# Incidents in cells the worker lost, or that left those cells after the cursor, that they do not otherwise see.
_LOST_SQL = text("""
SELECT i.id FROM incidents i LEFT JOIN grid_cells c ON c.id = i.cell_id
WHERE (c.code = ANY(:removed) OR i.id IN (SELECT e.incident_id FROM sync_scope_exits e
                                          WHERE e.sync_seq > :seq AND e.old_cell_code = ANY(:removed)))
  AND (c.code IS NULL OR NOT c.code = ANY(:kept)) AND i.reporter_id <> :uid
ORDER BY i.id
""").bindparams(bindparam("removed", type_=ARRAY(String)), bindparam("kept", type_=ARRAY(String)))

_SCOPED_VERSIONS_SQL = text("""
SELECT CAST(i.id AS text), i.version, c.code AS cell_code FROM incidents i
LEFT JOIN grid_cells c ON c.id = i.cell_id
WHERE i.voided_at IS NULL AND (c.code = ANY(:codes) OR i.reporter_id = :uid)
""").bindparams(bindparam("codes", type_=ARRAY(String)))

OWN_BUCKET = "own"
INCREMENTAL_WINDOW_FACTOR = 16  # first window = 16 pages of sync_seq numbers (the counter is county-wide)


@dataclass
class Page:
    changes: list[dict]
    cursor_state: dict
    has_more: bool
    high_water_seq: int
    rescope: dict | None
    scope: dict


def start_snapshot() -> None:
    """Make the rest of the transaction read one consistent snapshot (pull pages must not tear)."""
    db.session.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))


def high_water() -> int:
    """The committed counter: every sync_seq up to it is committed and visible (safe next cursor)."""
    return db.session.execute(select(SyncCounter.seq).where(SyncCounter.id == 1)).scalar_one()


def initial_state(device: Device, user: User) -> dict:
    """The state of a cursor before the first pull: everything in scope, from the beginning."""
    epoch, _codes = current_scope(user)
    return {"v": p.PROTOCOL_VERSION, "d": str(device.id), "s": 0, "e": epoch, "b": None}


def changes(state: dict, device: Device, user: User, limit: int) -> Page:
    """Return the next page for a cursor state (already verified as this device's)."""
    hw = high_water()
    epoch, codes = current_scope(user)
    state = dict(state)
    out: list[dict] = []
    rescope = None
    if state["e"] != epoch:
        old = scope_at(user, state["e"])
        removed, added = sorted(old - codes), sorted(codes - old)
        lost = db.session.execute(_LOST_SQL, {"removed": removed, "kept": sorted(codes), "uid": user.id,
                                              "seq": state["s"]}).scalars()
        out.extend({"entity": "incident", "op": "evict", "id": str(i), "reason": "cell_removed"} for i in lost)
        rescope = {"epoch": epoch, "cells_removed": removed, "cells_added": added}
        # A backfill still under way for cells kept goes on (from its start: upserts are idempotent).
        backfill = sorted(set(added) | (set(state["b"]["cells"]) & codes if state.get("b") else set()))
        state.update(e=epoch, b={"cells": backfill, "after": "", "until": state["s"]} if backfill and state["s"] else None)
    device.last_ack_seq = max(device.last_ack_seq, state["s"])
    if state.get("b"):
        page_changes, state["b"], more = _backfill(state["b"], user, limit)
        out.extend(page_changes)
        return Page(out, state, True, hw, rescope, {"epoch": epoch, "cells": sorted(codes)})
    page_changes, last_seq, more = _incremental(state["s"], codes, user, limit, hw)
    out.extend(page_changes)
    state["s"] = last_seq if more else max(hw, state["s"])
    return Page(out, state, more, hw, rescope, {"epoch": epoch, "cells": sorted(codes)})


def _cell_ids(codes) -> list[int]:
    return list(db.session.execute(_CELL_IDS_SQL, {"codes": sorted(codes)}).scalars()) if codes else []


def _incremental(seq: int, codes, user: User, limit: int, hw: int):
    cell_ids = _cell_ids(codes)
    # Widen the window (x8) until it holds more than a page or reaches the high water: the rows returned
    # are then exactly the first limit + 1 after the cursor, as without a window.
    window = limit * INCREMENTAL_WINDOW_FACTOR
    while True:
        until = min(seq + window, hw)
        rows = db.session.execute(_INCREMENTAL_SQL, {"cell_ids": cell_ids, "seq": seq, "until": until,
                                                     "uid": user.id, "limit": limit + 1}).all()
        if len(rows) > limit or until >= hw:
            break
        window *= 8
    streams = [(row.sync_seq, _incident_change(row)) for row in rows]
    for row in db.session.execute(_NOTES_SQL, {"cell_ids": cell_ids, "seq": seq, "until": hw, "uid": user.id,
                                               "limit": limit + 1}):
        streams.append((row.sync_seq, _note_change(row)))
    for row in db.session.execute(_EXITS_SQL, {"codes": sorted(codes), "seq": seq, "uid": user.id,
                                               "limit": limit + 1}):
        streams.append((row.sync_seq, {"entity": "incident", "op": "evict", "id": str(row.incident_id),
                                       "seq": row.sync_seq, "reason": "moved_out_of_scope"}))
    for category in db.session.scalars(select(Category).where(Category.sync_seq > seq)
                                       .options(selectinload(Category.conditions))  # not one query per row
                                       .order_by(Category.sync_seq).limit(limit + 1)):
        streams.append((category.sync_seq, _category_change(category)))
    streams = [s for s in streams if s[0] <= hw]  # nothing past the snapshot's committed high water
    streams.sort(key=lambda s: s[0])
    more = len(streams) > limit
    streams = streams[:limit]
    return [change for _, change in streams], (streams[-1][0] if streams else seq), more


def _backfill(backfill: dict, user: User, limit: int):
    rows = db.session.execute(_BACKFILL_SQL, {"cell_ids": _cell_ids(backfill["cells"]), "until": backfill["until"],
                                              "after": backfill["after"], "limit": limit + 1}).all()
    more = len(rows) > limit
    rows = rows[:limit]
    out = [_incident_change(r) for r in rows]
    # The notes of the backfilled incidents, up to the same point.
    ids = [r.id for r in rows]
    if ids:
        notes = db.session.execute(text("""
            SELECT n.id, n.sync_seq, n.incident_id, n.text, u.username AS author, n.created_at_device, n.created_at
            FROM incident_notes n JOIN users u ON u.id = n.author_id
            WHERE n.incident_id = ANY(:ids) AND n.sync_seq <= :until ORDER BY n.sync_seq"""),
            {"ids": ids, "until": backfill["until"]})
        out.extend(_note_change(n) for n in notes)
    next_backfill = {**backfill, "after": str(rows[-1].id)} if more else None
    return out, next_backfill, more


def _iso(value):
    return value.isoformat() if value is not None else None


def _incident_change(row) -> dict:
    if row.voided_at is not None:
        return {"entity": "incident", "op": "delete", "id": str(row.id), "seq": row.sync_seq, "version": row.version}
    return {"entity": "incident", "op": "upsert", "id": str(row.id), "seq": row.sync_seq, "version": row.version,
            "data": {
                "case_number": row.case_number, "status": row.status, "category": row.category_code_raw,
                "description": row.description, "location": row.raw_location, "location_wgs84": [row.lon, row.lat],
                "gps_accuracy_m": row.gps_accuracy_m, "cell_code": row.cell_code,
                "is_outside_grid": row.is_outside_grid, "priority": row.priority,
                "assigned_squad": row.assigned_squad_id, "reporter": row.reporter,
                "created_at_device": _iso(row.created_at_device), "received_at": _iso(row.received_at),
                "updated_at": _iso(row.updated_at), "due_at": _iso(row.due_at),
                # A verification (核实) or check (核查) task for this worker when the status says so.
                "task_user": row.task_user}}


def _note_change(row) -> dict:
    return {"entity": "note", "op": "upsert", "id": str(row.id), "seq": row.sync_seq,
            "data": {"incident_id": str(row.incident_id), "text": row.text, "author": row.author,
                     "created_at_device": _iso(row.created_at_device), "created_at": _iso(row.created_at)}}


def _category_change(category: Category) -> dict:
    return {"entity": "category", "op": "upsert" if category.is_active else "delete", "id": str(category.id),
            "seq": category.sync_seq,
            "data": {"standard": category.standard, "kind": category.kind, "code": category.code,
                     "name": category.name, "major_code": category.major_code, "major_name": category.major_name,
                     "conditions": [{"register_condition": c.register_condition, "close_condition": c.close_condition,
                                     "time_limit": c.time_limit, "time_unit": c.time_unit} for c in category.conditions]}}


def server_buckets(user: User) -> dict[str, list[tuple[str, int]]]:
    """Group the (id, version) of every live incident in the user's scope by bucket (cell code or own)."""
    _, codes = current_scope(user)
    buckets: dict[str, list] = {}
    for incident_id, version, cell_code in db.session.execute(
            _SCOPED_VERSIONS_SQL, {"codes": sorted(codes), "uid": user.id}):
        bucket = cell_code if cell_code in codes else OWN_BUCKET
        buckets.setdefault(bucket, []).append((incident_id, version))
    return buckets


def verify(state: dict, user: User, client_digests: dict[str, str]) -> dict:
    """Compare a phone's per-bucket digests with the server's; name the buckets that differ.

    :returns: {"status": "ok"} or {"status": "stale"} (pull first) or {"status": "mismatch", "buckets": [...],
        "manifests": {bucket: [[id, version], ...]}, "repair_state": cursor state that re-sends those buckets}.
    """
    if state["s"] < high_water():
        return {"status": "stale"}
    buckets = server_buckets(user)
    names = set(buckets) | set(client_digests)
    bad = sorted(b for b in names if client_digests.get(b, p.record_digest([])) != p.record_digest(buckets.get(b, [])))
    if not bad:
        return {"status": "ok"}
    manifests = {b: sorted([list(pair) for pair in buckets.get(b, [])]) for b in bad}
    cells = [b for b in bad if b != OWN_BUCKET]
    # Repair: re-send the bad cells from the beginning (own incidents are re-sent by a full re-pull).
    repair = {**state, "b": {"cells": cells, "after": "", "until": state["s"]}} if cells else {**state, "s": 0}
    return {"status": "mismatch", "buckets": bad, "manifests": manifests, "repair_state": repair}
