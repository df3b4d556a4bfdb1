"""Pull: the changes in a phone's scope after its cursor, in commit order, compacted, with evictions,
re-scoping (evict + backfill) and an integrity check. Runs in one REPEATABLE READ snapshot.

Each change is built as JSON text by PostgreSQL and spliced into the page's body unparsed: per-row
Python (dicts, timestamp formatting, jsonb parsing, JSON encoding) was most of a full page's time."""
import json
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.types import String

from gridapp.extensions import db
from gridapp.models import Device, SyncCounter, User
from gridapp.services.scope import current_scope, scope_at
from sync import protocol as p
from sync.devices import check_device


def _iso(column: str) -> str:
    """SQL rendering a timestamptz as Python's isoformat() of it in UTC, the format phones have always had:
    2026-11-22T07:49:18.186400+00:00, without the fraction when it is zero; NULL stays NULL. (AT TIME ZONE
    with an interval is arithmetic; with the name 'UTC' every row looked the zone up.)"""
    return (f"""replace(to_char({column} AT TIME ZONE INTERVAL '0', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),"""
            """ '.000000+', '+')""")


# Each change's JSON is built by concatenating its parts' JSON text: json_build_object looks up how to
# render each of its arguments on every row (about half of a 500-row page's statement). A JSON value here is
# a list of parts, (True, constant JSON text) or (False, SQL giving JSON text); _sql() renders it as one
# concatenation, adjacent constants merged. Numbers print as PostgreSQL prints them (the API refuses NaN
# and infinities), strings through to_json (escaped), NULL as null.
def _sql(parts: list) -> str:
    merged: list = []
    for constant, text_ in parts:
        if constant and merged and merged[-1][0]:
            merged[-1] = (True, merged[-1][1] + text_)
        else:
            merged.append((constant, text_))
    return " || ".join("'" + text_.replace("'", "''") + "'" if constant else text_ for constant, text_ in merged)


def _const(value) -> list:
    return [(True, json.dumps(value, ensure_ascii=False))]


def _num(expr: str) -> list:
    """A number or a boolean."""
    return [(False, f"CAST({expr} AS text)")]


def _json_str(expr: str) -> list:
    return [(False, f"to_json(CAST({expr} AS text))::text")]


def _quoted(expr: str) -> list:
    """A value whose text needs no escaping (a uuid, a time) as a JSON string."""
    return [(True, '"'), (False, f"CAST({expr} AS text)"), (True, '"')]


def _json_time(column: str) -> list:
    return [(True, '"'), (False, _iso(column)), (True, '"')]


def _or_null(parts: list) -> list:
    """JSON null for SQL NULL (which would make the whole concatenation NULL)."""
    return [(False, f"COALESCE({_sql(parts)}, 'null')")]


def _json_object(*pairs: tuple[str, list]) -> list:
    """{"key":value,...}, compact and in the order given."""
    parts = []
    for n, (key, value) in enumerate(pairs):
        parts += [(True, ("{" if n == 0 else ",") + json.dumps(key) + ":"), *value]
    return parts + [(True, "}")]


# One incident as phones see it: an upsert, or a tombstone once voided. The location is the fix as sent
# (raw) plus its WGS84 conversion. task_user: a verification (核实) or check (核查) task for this worker
# when the status says so. Over `page i` (the incidents to build) with the cell codes `c` and the user
# names `r`, `t` (as JSON text) joined in by _incidents_json.
_INCIDENT_HEAD = (("id", _quoted("i.id")), ("seq", _or_null(_num("i.sync_seq"))), ("version", _num("i.version")))
_INCIDENT_DATA = _json_object(
    ("case_number", _json_str("i.case_number")), ("status", _json_str("i.status")),
    ("category", _json_str("i.category_code_raw")), ("description", _json_str("i.description")),
    ("location", [(False, "CAST(i.raw_location AS text)")]),
    ("location_wgs84", [(True, "["), *_num("ST_X(i.location)"), (True, ","), *_num("ST_Y(i.location)"), (True, "]")]),
    ("gps_accuracy_m", _or_null(_num("i.gps_accuracy_m"))),
    ("cell_code", [(False, f"COALESCE(c.code, {_sql(_json_str('(SELECT code FROM grid_cells WHERE id = i.cell_id)'))},"
                           " 'null')")]),
    ("is_outside_grid", _num("i.is_outside_grid")), ("priority", _or_null(_num("i.priority"))),
    ("assigned_squad", _or_null(_num("i.assigned_squad_id"))), ("reporter", _or_null([(False, "r.name")])),
    ("created_at_device", _or_null(_json_time("i.created_at_device"))),
    ("received_at", _json_time("i.received_at")), ("updated_at", _json_time("i.updated_at")),
    ("due_at", _or_null(_json_time("i.due_at"))), ("task_user", _or_null([(False, "t.name")])))
_INCIDENT_DELETE = _json_object(("entity", _const("incident")), ("op", _const("delete")), *_INCIDENT_HEAD)
_INCIDENT_UPSERT = _json_object(("entity", _const("incident")), ("op", _const("upsert")), *_INCIDENT_HEAD,
                                ("data", _INCIDENT_DATA))
_INCIDENT_CHANGE = f"CASE WHEN i.voided_at IS NOT NULL THEN {_sql(_INCIDENT_DELETE)} ELSE {_sql(_INCIDENT_UPSERT)} END"


# What _INCIDENT_CHANGE reads of an incident (the page is copied once: only these columns).
_PAGE_COLUMNS = ("id, sync_seq, version, voided_at, case_number, status, category_code_raw, description, raw_location, "
                 "location, gps_accuracy_m, cell_id, is_outside_grid, priority, assigned_squad_id, reporter_id, "
                 "created_at_device, received_at, updated_at, due_at, task_user_id")


def _incidents_json(page: str, order_by: str = "") -> str:
    """A statement giving (sync_seq, id as text, change) for the incidents that the SELECT `page` picks.

    Names are looked up once per page (a page has few reporters), not per row; cell codes come from the
    scope's cells passed in (:cell_ids with their :cell_codes, as _CONTEXT_SQL gives them) and are looked
    up only for an incident outside the scope (the worker's own reports elsewhere). Joining grid_cells
    itself made the planner hash all of it (10,000 cells), and a look-up per row cost ~2 µs a row."""
    return f"""
WITH page AS MATERIALIZED ({page}),
names AS (SELECT id, to_json(username)::text AS name FROM users
          WHERE id IN (SELECT reporter_id FROM page UNION SELECT task_user_id FROM page))
SELECT i.sync_seq, CAST(i.id AS text) AS id, {_INCIDENT_CHANGE} AS change
FROM page i
LEFT JOIN (SELECT m.id, to_json(m.code)::text AS code
           FROM unnest(CAST(:cell_ids AS bigint[]), CAST(:cell_codes AS text[])) AS m(id, code)) c ON c.id = i.cell_id
LEFT JOIN names r ON r.id = i.reporter_id
LEFT JOIN names t ON t.id = i.task_user_id
{order_by}"""


_NOTE_COLUMNS = "n.sync_seq, " + _sql(_json_object(
    ("entity", _const("note")), ("op", _const("upsert")), ("id", _quoted("n.id")), ("seq", _num("n.sync_seq")),
    ("data", _json_object(("incident_id", _quoted("n.incident_id")), ("text", _json_str("n.text")),
                          ("author", _json_str("u.username")),
                          ("created_at_device", _or_null(_json_time("n.created_at_device"))),
                          ("created_at", _json_time("n.created_at")))))) + " AS change"

# Incremental: per scoped cell (any version of its code) and for the reporter's own incidents, the
# first :limit rows in the window (:seq, :until] by the (cell_id|reporter_id, sync_seq) indexes; then the
# overall first :limit. The window keeps each per-cell scan short when a scope holds many busy cells
# (without it the first page of a dense scope reads every scoped row after the cursor); see
# incidents_in_window. Only the sync_seq (unique) and the row address here: the statement may run more than
# once per page, and the JSON is built once, by _INCIDENT_CHANGES_SQL, for the rows that make the page.
_INCREMENTAL_SQL = text("""
SELECT x.sync_seq, x.ctid FROM unnest(CAST(:cell_ids AS bigint[])) AS cid(id)
CROSS JOIN LATERAL (SELECT sync_seq, CAST(ctid AS text) AS ctid FROM incidents WHERE cell_id = cid.id
                    AND sync_seq > :seq AND sync_seq <= :until ORDER BY sync_seq LIMIT :limit) x
UNION
SELECT sync_seq, ctid FROM (SELECT sync_seq, CAST(ctid AS text) AS ctid FROM incidents
                            WHERE reporter_id = :uid AND sync_seq > :seq AND sync_seq <= :until
                            ORDER BY sync_seq LIMIT :limit) own
ORDER BY sync_seq LIMIT :limit
""")

# The page's incidents by the row addresses (ctid) the scan found in the same snapshot: a TID scan, not 500
# primary-key look-ups (~3 ms less). The addresses hold: the snapshot still sees those row versions, so
# they cannot be pruned or vacuumed away before the transaction ends.
_INCIDENT_CHANGES_SQL = text(_incidents_json(f"SELECT {_PAGE_COLUMNS} FROM incidents WHERE ctid = ANY(CAST(:tids AS tid[]))"))

# The page's other streams, each its first :limit after the cursor, in one statement (one round trip, not three):
# notes of incidents in scope, incidents that moved out of the scope's cells (evictions), and the catalogue
# (its conditions in order; first pages only: categories rarely change). Exits are bounded by the high water
# in Python, as every stream.
_NOTES = f"""
SELECT {_NOTE_COLUMNS}
FROM incident_notes n
JOIN incidents i ON i.id = n.incident_id
JOIN users u ON u.id = n.author_id
WHERE n.sync_seq > :seq AND n.sync_seq <= :until
  AND (i.cell_id = ANY(CAST(:cell_ids AS bigint[])) OR i.reporter_id = :uid)
ORDER BY n.sync_seq
LIMIT :limit"""
_EXIT_CHANGE = _sql(_json_object(("entity", _const("incident")), ("op", _const("evict")), ("id", _quoted("e.incident_id")),
                                 ("seq", _num("e.sync_seq")), ("reason", _const("moved_out_of_scope"))))
_EXITS = f"""
SELECT e.sync_seq, {_EXIT_CHANGE} AS change FROM sync_scope_exits e JOIN incidents i ON i.id = e.incident_id
WHERE e.sync_seq > :seq AND e.old_cell_code = ANY(CAST(:codes AS text[]))
  AND (e.new_cell_code IS NULL OR NOT e.new_cell_code = ANY(CAST(:codes AS text[]))) AND i.reporter_id <> :uid
ORDER BY e.sync_seq LIMIT :limit"""
_CONDITION = _sql(_json_object(
    ("register_condition", _json_str("cc.register_condition")), ("close_condition", _json_str("cc.close_condition")),
    ("time_limit", _num("cc.time_limit")), ("time_unit", _json_str("cc.time_unit"))))
_CATEGORY_CHANGE = _sql(_json_object(
    ("entity", _const("category")), ("op", [(False, """CASE WHEN k.is_active THEN '"upsert"' ELSE '"delete"' END""")]),
    ("id", _quoted("k.id")), ("seq", _num("k.sync_seq")),
    ("data", _json_object(
        ("standard", _json_str("k.standard")), ("kind", _json_str("k.kind")), ("code", _json_str("k.code")),
        ("name", _json_str("k.name")), ("major_code", _json_str("k.major_code")),
        ("major_name", _json_str("k.major_name")),
        ("conditions", [(False, "COALESCE(kc.conditions, '[]')")])))))
# The conditions are listed once for the whole catalogue (a look-up per category scanned all the conditions:
# category_conditions has no index on category_id).
_CATEGORIES = f"""
SELECT k.sync_seq, {_CATEGORY_CHANGE} AS change
FROM categories k
LEFT JOIN (SELECT cc.category_id, '[' || string_agg({_CONDITION}, ',' ORDER BY cc.seq) || ']' AS conditions
           FROM category_conditions cc GROUP BY cc.category_id) kc ON kc.category_id = k.id
WHERE k.sync_seq > :seq AND k.sync_seq <= :until
ORDER BY k.sync_seq
LIMIT :limit"""
_OTHER_CHANGES_SQL = text(f"({_NOTES})\nUNION ALL\n({_EXITS})\nUNION ALL\n({_CATEGORIES})")

# Backfill after gaining cells: every incident in those cells (with its notes up to the cursor), keyset by id;
# an incident changed after the cursor comes again in the incremental stream (upserts are idempotent).
_BACKFILL_SQL = text(_incidents_json(f"""
SELECT {_PAGE_COLUMNS} FROM incidents WHERE cell_id = ANY(CAST(:backfill_cell_ids AS bigint[])) AND CAST(id AS text) > :after
ORDER BY CAST(id AS text) LIMIT :limit""", order_by="ORDER BY CAST(i.id AS text)"))

_BACKFILL_NOTES_SQL = text(f"""
SELECT {_NOTE_COLUMNS}
FROM incident_notes n JOIN users u ON u.id = n.author_id
WHERE n.incident_id = ANY(CAST(:ids AS uuid[])) AND n.sync_seq <= :until ORDER BY n.sync_seq
""")

_CELL_IDS_SQL = text("SELECT id FROM grid_cells WHERE code = ANY(CAST(:codes AS text[]))")

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
WINDOW_MARGIN = 1.5  # a window widened in proportion to the rows it held is given this much more


@dataclass
class Page:
    changes: list[str]  # each change as JSON text, in page order
    cursor_state: dict
    has_more: bool
    high_water_seq: int
    rescope: dict | None
    scope: dict

    def body(self, next_cursor: str, server_time: datetime) -> str:
        """The page as the JSON body of GET /api/v1/sync/changes (docs/sync-protocol.md §5)."""
        tail = json.dumps({"next_cursor": next_cursor, "has_more": self.has_more, "high_water_seq": self.high_water_seq,
                           "rescope": self.rescope, "scope": self.scope, "server_time": server_time.isoformat()},
                          ensure_ascii=False, separators=(",", ":"))
        return '{"changes":[' + ",".join(self.changes) + "]," + tail[1:]


def start_snapshot() -> None:
    """Make the request's next transaction read one consistent snapshot (pull pages must not tear), from its
    first statement on: call before anything is read (the API calls it before authentication, so the token,
    the device and the page are read in one snapshot and no commit is needed to start it). psycopg opens the
    transaction with BEGIN ISOLATION LEVEL REPEATABLE READ: no statement of its own."""
    session = db.session()
    if session.in_transaction():  # an app context reused across requests (tests): end what came before
        session.commit()
    session.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def high_water() -> int:
    """The committed counter: every sync_seq up to it is committed and visible (safe next cursor)."""
    return db.session.execute(select(SyncCounter.seq).where(SyncCounter.id == 1)).scalar_one()


@dataclass(frozen=True, slots=True)
class PullContext:
    """What a page needs besides its cursor, read in the page's snapshot by one statement (_CONTEXT_SQL)."""

    device_id: UUID
    device_state: str  # active or draining (a revoked device never gets a context)
    last_ack_seq: int
    user_id: int
    epoch: int  # the user's scope epoch
    codes: frozenset[str]  # the cell codes of that scope
    codes_literal: str  # the same, as an array literal (psycopg adapts a list element by element)
    cell_ids: str  # the ids of every cell with one of those codes (any version), as an array literal
    cell_codes: str  # those cells' codes, in the same order: cell_ids[n] has cell_codes[n]
    high_water: int  # the committed counter (see high_water())
    scope_cells: int  # how many cells (any version) cell_ids holds
    county_cells: float  # PostgreSQL's estimate of all the cells' rows (pg_class.reltuples; -1 if never analysed)


# The token's device and user, the user's current scope with its cells, and the committed counter: the ORM
# read these with six statements (and the view read device and user twice, around a commit).
_CONTEXT_SQL = text("""
SELECT t.device_id, d.state AS device_state, d.last_ack_seq, u.id AS user_id, u.scope_epoch,
       COALESCE(ws.cell_codes, '{}') AS codes, COALESCE(CAST(ws.cell_codes AS text), '{}') AS codes_literal,
       COALESCE(sc.cell_ids, '{}') AS cell_ids, COALESCE(sc.cell_codes, '{}') AS cell_codes,
       (SELECT seq FROM sync_counter WHERE id = 1) AS high_water, COALESCE(sc.n, 0) AS scope_cells,
       (SELECT reltuples FROM pg_class WHERE oid = CAST('grid_cells' AS regclass)) AS county_cells
FROM api_tokens t JOIN users u ON u.id = t.user_id
LEFT JOIN devices d ON d.id = t.device_id
LEFT JOIN worker_scopes ws ON ws.user_id = u.id AND ws.epoch = u.scope_epoch
LEFT JOIN LATERAL (SELECT CAST(array_agg(c.id ORDER BY c.id) AS text) AS cell_ids,
                          CAST(array_agg(c.code ORDER BY c.id) AS text) AS cell_codes, count(*) AS n
                   FROM grid_cells c WHERE c.code = ANY(ws.cell_codes)) sc ON true
WHERE t.id = :token_id
""")


def context(token_id: int) -> PullContext:
    """Read a page's context for an authenticated token (in the page's snapshot: see start_snapshot).

    :raises DeviceTokenRequired: not a device token. :raises DeviceRevoked: the device is revoked.
    """
    row = db.session.execute(_CONTEXT_SQL, {"token_id": token_id}).one()
    check_device(row.device_id, row.device_state)
    return PullContext(device_id=row.device_id, device_state=row.device_state, last_ack_seq=row.last_ack_seq,
                       user_id=row.user_id, epoch=row.scope_epoch, codes=frozenset(row.codes),
                       codes_literal=row.codes_literal, cell_ids=row.cell_ids, cell_codes=row.cell_codes,
                       high_water=row.high_water, scope_cells=row.scope_cells, county_cells=row.county_cells)


def initial_state(ctx: PullContext) -> dict:
    """The state of a cursor before the first pull: everything in scope, from the beginning."""
    return {"v": p.PROTOCOL_VERSION, "d": str(ctx.device_id), "s": 0, "e": ctx.epoch, "b": None}


def changes(state: dict, ctx: PullContext, limit: int) -> Page:
    """Return the next page for a cursor state (already verified as this device's), and record the
    position the cursor acknowledges (the caller commits)."""
    hw, epoch, codes = ctx.high_water, ctx.epoch, ctx.codes
    state = dict(state)
    out: list[str] = []
    rescope = None
    if state["e"] != epoch:
        old = scope_at(ctx.user_id, state["e"])
        removed, added = sorted(old - codes), sorted(codes - old)
        lost = db.session.execute(_LOST_SQL, {"removed": removed, "kept": sorted(codes), "uid": ctx.user_id,
                                              "seq": state["s"]}).scalars()
        out.extend(_json({"entity": "incident", "op": "evict", "id": str(i), "reason": "cell_removed"}) for i in lost)
        rescope = {"epoch": epoch, "cells_removed": removed, "cells_added": added}
        # A backfill still under way for cells kept goes on (from its start: upserts are idempotent).
        backfill = sorted(set(added) | (set(state["b"]["cells"]) & codes if state.get("b") else set()))
        state.update(e=epoch, b={"cells": backfill, "after": "", "until": state["s"]} if backfill and state["s"] else None)
    if state["s"] > ctx.last_ack_seq:
        db.session.execute(update(Device.__table__).where(Device.id == ctx.device_id, Device.last_ack_seq < state["s"])
                           .values(last_ack_seq=state["s"]))
    if state.get("b"):
        page_changes, state["b"], more = _backfill(state["b"], ctx, limit)
        out.extend(page_changes)
        return Page(out, state, True, hw, rescope, {"epoch": epoch, "cells": sorted(codes)})
    page_changes, last_seq, more = _incremental(state["s"], ctx, limit, state.get("w"))
    out.extend(page_changes)
    # The next page's first window: the stretch of sync_seq this page covered, with a margin (one scan, not two,
    # while the scope's share of changes holds steady); absent from older cursors.
    state["w"] = max(limit, int((last_seq - state["s"]) * WINDOW_MARGIN)) if more else None
    state["s"] = last_seq if more else max(hw, state["s"])
    return Page(out, state, more, hw, rescope, {"epoch": epoch, "cells": sorted(codes)})


def _json(change: dict) -> str:
    return json.dumps(change, ensure_ascii=False, separators=(",", ":"))


def _cell_ids(codes: str) -> str:
    """The ids of every cell with one of these codes (any version), as an array literal like the codes."""
    return _array(db.session.execute(_CELL_IDS_SQL, {"codes": codes}).scalars().all())


def _array(values) -> str:
    """A PostgreSQL array literal: psycopg adapts a list element by element (with a regex per string), which
    costs more than the statements' own work for a scope of hundreds of cells."""
    return "{" + ",".join('"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


def incidents_in_window(fetch, seq: int, limit: int, hw: int, window: int | None = None) -> list:
    """Run the incremental statement over a sync_seq window (seq, until] that grows until it holds more
    than `limit` rows or reaches the high water: the rows are then exactly the first limit + 1 after the
    cursor, as without a window, while each per-cell scan stays short.

    :param fetch: runs _INCREMENTAL_SQL for an `until` and returns its rows (the bench passes its own).
    :param window: the first window's width (the cursor's hint); by default INCREMENTAL_WINDOW_FACTOR pages.
    """
    window = window or limit * INCREMENTAL_WINDOW_FACTOR
    while True:
        until = min(seq + window, hw)
        rows = fetch(until)
        if len(rows) > limit or until >= hw:
            return rows
        # Grow in proportion to the rows found (a scope's share of the county-wide counter), with a margin.
        window = int(window * min(8.0, max(2.0, WINDOW_MARGIN * (limit + 1) / len(rows)))) if rows else window * 8


def first_window(limit: int, scope_cells: int, county_cells: float) -> int:
    """The first window of a page without a cursor's hint (a first page): the stretch of sync_seq that holds
    about WINDOW_MARGIN pages of the scope's changes if changes were spread evenly over the cells, so that
    one scan is usually enough (a first page of a heavy scope took two); incidents_in_window widens it when
    the guess is short. Without the figures, INCREMENTAL_WINDOW_FACTOR pages."""
    if scope_cells <= 0 or county_cells <= 0:
        return limit * INCREMENTAL_WINDOW_FACTOR
    return int(limit * WINDOW_MARGIN * max(1.0, county_cells / scope_cells))


def _incremental(seq: int, ctx: PullContext, limit: int, window: int | None):
    hw, cell_ids, uid = ctx.high_water, ctx.cell_ids, ctx.user_id
    incidents = incidents_in_window(
        lambda until: db.session.execute(_INCREMENTAL_SQL, {"cell_ids": cell_ids, "seq": seq, "until": until,
                                                            "uid": uid, "limit": limit + 1}).all(),
        seq, limit, hw, window or first_window(limit, ctx.scope_cells, ctx.county_cells))
    address = dict(incidents)  # sync_seq → row address
    streams = [(seq_, None) for seq_ in address]  # an incident's JSON comes once the page is cut
    streams.extend(db.session.execute(_OTHER_CHANGES_SQL, {"cell_ids": cell_ids, "codes": ctx.codes_literal, "seq": seq,
                                                           "until": hw, "uid": uid, "limit": limit + 1}).all())
    streams = [s for s in streams if s[0] <= hw]  # nothing past the snapshot's committed high water
    streams.sort(key=lambda s: s[0])
    more = len(streams) > limit
    streams = streams[:limit]
    tids = [address[seq_] for seq_, item in streams if item is None]
    built = {seq_: change for seq_, _, change in db.session.execute(_INCIDENT_CHANGES_SQL, {
        "tids": _array(tids), "cell_ids": cell_ids, "cell_codes": ctx.cell_codes}).all()} if tids else {}
    # An incident (None) becomes its JSON; the other changes are JSON already.
    return [built[seq_] if item is None else item for seq_, item in streams], (streams[-1][0] if streams else seq), more


def _backfill(backfill: dict, ctx: PullContext, limit: int):
    rows = db.session.execute(_BACKFILL_SQL, {"backfill_cell_ids": _cell_ids(_array(backfill["cells"])),
                                              "after": backfill["after"], "limit": limit + 1,
                                              "cell_ids": ctx.cell_ids, "cell_codes": ctx.cell_codes}).all()
    more = len(rows) > limit
    rows = rows[:limit]
    out = [r.change for r in rows]
    # The notes of the backfilled incidents, up to the same point.
    ids = [r.id for r in rows]
    if ids:
        out.extend(n.change for n in db.session.execute(_BACKFILL_NOTES_SQL, {"ids": _array(ids),
                                                                              "until": backfill["until"]}))
    next_backfill = {**backfill, "after": rows[-1].id} if more else None
    return out, next_backfill, more


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
