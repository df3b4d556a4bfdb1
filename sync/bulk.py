"""Set-based push: a batch's plain creates in one transaction, with a few statements for the whole run.

A batch is applied in order. Consecutive `incident.create` mutations that need nothing unusual form a run,
applied in one transaction: one receipt/device_seq lookup, one exists check, one cell lookup, one category
lookup, one case-number block per county, one duplicate search, multi-row INSERTs of receipts, incidents and
revisions, one block of sync_seq numbers, one COMMIT. Everything else (replays, reused ids or device_seq,
invalid or out-of-scope items, photos, updates, notes) goes through sync.push one mutation at a time, in its
place in the batch, and so do the items of a run whose transaction fails (a concurrent copy of the same
request committed first: one by one they answer `duplicate`). The results are those of the one-by-one path.
Reports registered on arrival (自动立案) are inserted registered, with their register events and `route` outbox
messages written by one more statement for the run (workflow.write_arrival_registrations).
"""
import functools
import json
import logging
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from geoalchemy2 import WKBElement
from marshmallow import ValidationError
from shapely.geometry import Point
from sqlalchemy import Row, Table, text

import geo.crs
from geo.errors import GeometryError
from gridapp.extensions import db
from gridapp.models import Incident, IncidentRevision, SyncReceipt, utcnow
from gridapp.services import incidents, workflow
from gridapp.transactions import commit_unless_raced
from sync import protocol as p
from sync.push import PushContext, apply_in_own_transaction
from sync.schemas import MUTATION_SCHEMAS

log = logging.getLogger(__name__)

CREATE = "incident.create"


@dataclass
class PlainCreate:
    """A create found fit for the set-based path, with what the screening learnt about it."""

    raw: dict
    digest: str
    mutation: dict
    lon: float  # WGS84
    lat: float
    cell: Row | None = None  # from incidents.cells_at; None outside the grid
    county: str = ""


def push_batch(raws: list, ctx: PushContext, *, set_based: bool = True) -> list[dict]:
    """Apply a batch's mutations in order and return a result per item; commits.

    :param set_based: False applies every mutation one by one (the reference the tests compare with).
    """
    plan = screen(raws, ctx) if set_based else [None] * len(raws)
    results, run = [], []
    for raw, create in zip(raws, plan, strict=True):
        if create is not None:
            run.append(create)
            continue
        results += apply_run(run, ctx)
        run = []
        results.append(apply_in_own_transaction(raw, ctx))
    results += apply_run(run, ctx)
    return results


def screen(raws: list, ctx: PushContext) -> list[PlainCreate | None]:
    """Find the creates that the set-based path may apply (None for the others), with a few reads in all.

    A create is left to the one-by-one path when an earlier item of the batch has its mutation_id,
    device_seq or incident_id (that item's outcome decides this one's), when it is invalid, has photos,
    was seen before (receipt, device_seq used, incident exists), or lies in another township's grid.
    """
    plan: list[PlainCreate | None] = [None] * len(raws)
    seen = set()
    for i, raw in enumerate(raws):
        if not isinstance(raw, dict):
            continue
        seq = raw.get("device_seq")
        keys = {key for key in (("mutation", p.parse_uuid(raw.get("mutation_id"))), ("seq", seq),
                                ("incident", p.parse_uuid(raw.get("incident_id"))))
                if isinstance(key[1], uuid.UUID | int)}
        earlier = not seen.isdisjoint(keys)
        seen |= keys
        if earlier or raw.get("type") != CREATE or raw.get("photos"):
            continue
        try:
            mutation = MUTATION_SCHEMAS[CREATE].load(raw)
            location = mutation["data"]["location"]
            lon, lat = geo.crs.to_wgs84(location["lon"], location["lat"], location["crs"])
        except (ValidationError, GeometryError):
            continue
        if mutation["incident_id"] not in ctx.quarantined_incidents:
            plan[i] = PlainCreate(raw, p.body_hash(raw), mutation, lon, lat)
    codes = {c.mutation["data"]["category"] for c in plan if c is not None}
    if codes:  # one read of their categories: the ids for _insert_run, the 立案条件 for 自动立案
        ctx.category_ids, arrival = workflow.categories_on_arrival(codes)
        if not ctx.trusted:  # 自动立案 here too, unless the category has no 立案条件 1 (one by one, refused as there)
            ctx.arrival = arrival
            plan = [None if c is not None and c.mutation["data"]["category"] in arrival
                    and arrival[c.mutation["data"]["category"]] is None else c for c in plan]
    creates = [c for c in plan if c is not None]
    if not creates:
        return plan
    seen_before = _seen_before(creates, ctx)
    cells = incidents.cells_at([(c.lon, c.lat) for c in creates])
    area_code = ctx.area_code
    for c, cell in zip(creates, cells, strict=True):
        c.cell = cell
        c.county = cell.township_code[:6] if cell is not None else area_code[:6]
    return [c if c is not None and c.mutation["mutation_id"] not in seen_before
            and (c.cell is None or ctx.trusted or c.cell.code.startswith(area_code)) else None for c in plan]


def _seen_before(creates: list[PlainCreate], ctx: PushContext) -> set[uuid.UUID]:
    """Return the mutation_ids whose mutation, device_seq or incident the server already has."""
    mutation_ids = [c.mutation["mutation_id"] for c in creates]
    by_seq = {c.mutation["device_seq"]: c.mutation["mutation_id"] for c in creates}
    by_incident = {c.mutation["incident_id"]: c.mutation["mutation_id"] for c in creates}
    seen = set()
    # Arrays, not IN lists: one statement text whatever the run's size (SQLAlchemy renders and psycopg
    # parses an IN list anew for each size).
    for mutation_id, device_id, seq, incident_id in db.session.execute(_SEEN_SQL, {
            "mutation_ids": mutation_ids, "device_id": ctx.device_id, "seqs": list(by_seq), "ids": list(by_incident)}):
        if incident_id is not None:
            seen.add(by_incident[incident_id])
            continue
        seen.add(mutation_id)
        if device_id == ctx.device_id and seq in by_seq:
            seen.add(by_seq[seq])
    return seen


def apply_run(run: list[PlainCreate], ctx: PushContext) -> list[dict]:
    """Apply a run of plain creates in one transaction; if it fails, apply them one by one instead."""
    if not run:
        return []
    outbox = len(ctx.outbox)
    results = commit_unless_raced(lambda: _insert_run(run, ctx))
    if results is not None:
        return results
    del ctx.outbox[outbox:]  # the rolled-back run's route messages and sync_seqs did not happen
    for c in run:
        ctx.applied_seqs.pop(c.mutation["incident_id"], None)
    # A concurrent request committed one of these first (or a deadlock): one by one, each finds its receipt
    # or collision.
    log.info("push: a run of %d creates rolled back, applying them one by one", len(run))
    return [apply_in_own_transaction(c.raw, ctx) for c in run]


def _insert_run(run: list[PlainCreate], ctx: PushContext) -> list[dict]:
    """Write a run's incidents, revisions and receipts (flushes, never commits); return their results.

    Locks come last, in the order the one-by-one path takes them (case-number counters, then the sync
    counter at COMMIT), and everything that can be done before them is: the counters serialise creates in
    a county, and all commits, only from the moment they are taken.
    """
    user_id, device_id, township_id = ctx.user_id, ctx.device_id, ctx.area_id
    categories = {code: ctx.category_ids[code] for code in {c.mutation["data"]["category"] for c in run}
                  if code in ctx.category_ids}  # as screen read them
    duplicates = incidents.likely_duplicates(
        [(c.mutation["incident_id"], c.mutation["data"]["category"], c.lon, c.lat) for c in run])
    rows, revisions, receipts, results = [], [], [], []
    for c, duplicate in zip(run, duplicates, strict=True):
        mutation, data = c.mutation, c.mutation["data"]
        category_id = categories.get(data["category"])
        values = incidents.new_incident_values(
            incident_id=mutation["incident_id"], case_number=None, reporter_id=user_id,
            device_id=device_id, category_code=data["category"], category_id=category_id,
            description=data["description"], location=data["location"], point=Point(c.lon, c.lat),
            cell=c.cell, township_id=township_id, gps_accuracy_m=data["gps_accuracy_m"],
            created_at_device=mutation["created_at_device"], clock_suspect=ctx.clock_suspect, party=data.get("party"),
            likely_duplicate_of=duplicate,
        )
        rows.append(values)
        revisions.append(incidents.created_revision_values(values, mutation["mutation_id"], user_id))
        warnings = [w for w, present in (("outside_grid", c.cell is None), ("unknown_category", category_id is None))
                    if present]
        result = {"mutation_id": str(mutation["mutation_id"]), "incident_id": str(mutation["incident_id"]),
                  "status": p.APPLIED, "version": 1, "case_number": None,
                  "cell_code": c.cell.code if c.cell is not None else None, "warnings": warnings, "photos": []}
        results.append(result)
        receipts.append({"mutation_id": mutation["mutation_id"], "device_id": device_id,
                         "device_seq": mutation["device_seq"], "user_id": user_id, "request_sha256": c.digest,
                         "status": p.APPLIED, "result": result})
    registered = _register_on_arrival(run, rows, results, duplicates, ctx)  # before the receipts store results
    # Lock the rows our foreign keys point at in synced tables before taking any counter: a transaction that
    # changed one holds it FOR UPDATE (its sync_seq changed) while it waits for the sync counter at COMMIT,
    # so checking the key after taking the counter would deadlock. (The one-by-one path checks keys early.)
    db.session.execute(_KEY_SHARE_SQL, {"incidents": [d for d in duplicates if d is not None],
                                        "categories": list(set(categories.values()))})
    numbers = {county: iter(block) for county, block in
               incidents.case_numbers(Counter(c.county for c in run), utcnow()).items()}
    for c, values, result in zip(run, rows, results, strict=True):
        values["case_number"] = result["case_number"] = next(numbers[c.county])
    insert_rows(SyncReceipt.__table__, receipts)
    # The revisions go in before the counter is taken, their key to the incidents checked at COMMIT: from
    # the counter UPDATE on, every push waits for this one, so only the incidents are written under it.
    db.session.execute(_DEFER_REVISION_KEY_SQL)
    insert_rows(IncidentRevision.__table__, revisions)
    # Stamp the incidents as the deferred trigger would at COMMIT, but with one counter UPDATE for the run
    # (the trigger's per-row UPDATE of the counter is quadratic within a transaction). The counter row stays
    # locked until COMMIT, so number order is still commit order, which pull relies on.
    first = db.session.execute(_RESERVE_SQL, {"n": len(rows)}).scalar_one()
    for offset, values in enumerate(rows):
        values["sync_seq"] = ctx.applied_seqs[values["id"]] = first + offset
    insert_rows(Incident.__table__, rows)
    ctx.outbox.extend(workflow.write_arrival_registrations(registered))
    return results


def _register_on_arrival(run: list[PlainCreate], rows: list[dict], results: list[dict], duplicates: list,
                         ctx: PushContext) -> list:
    """自动立案 as `workflow.register_on_arrival` does one by one: a grid worker's report of an auto_register
    小类, inside the grid and not a likely duplicate, is inserted registered (its revision, written before,
    stays the report's); return (incident id, condition) for the register events. The route messages'
    ids join ctx.outbox once written, for the caller to enqueue after the commit."""
    arrival = ctx.arrival
    if ctx.trusted or not arrival:
        return []
    registered = []
    for c, values, result, duplicate in zip(run, rows, results, duplicates, strict=True):
        condition = arrival.get(c.mutation["data"]["category"])
        values.setdefault("condition_id", None)  # every row of the multi-row INSERT has the same columns
        if (condition is None or values["category_id"] != condition.category_id
                or not workflow.may_register_on_arrival(ctx.user_role, c.cell is None, duplicate)):
            continue
        workflow.arrives_registered(values, condition)
        result["version"] = values["version"]
        registered.append((values["id"], condition))
    return registered


def insert_rows(table: Table, rows: list[dict]) -> None:
    """INSERT many rows (dicts with the same keys) as ONE statement, from one JSON array of the rows.

    `session.execute(insert(table), rows)` sends one INSERT per row (psycopg's pipelined executemany):
    PostgreSQL then plans and runs each row as its own statement, and per-statement triggers (the map
    counts' transition table) fire once per row; one `INSERT … SELECT … FROM json_populate_recordset`
    costs the database a half to a third as much per row (bench/RESULTS.md, "Push throughput"), and the
    client sends one string made by one json.dumps (arrays per column cost more to dump than the rows
    save). Values are read by the columns' own input functions: uuids, datetimes (ISO 8601) and
    geometries (hex EWKB) go as strings.
    """
    if rows:
        db.session.execute(_insert_sql(table, tuple(rows[0])), {"rows": json.dumps(rows, default=_json_value)})


@functools.cache
def _insert_sql(table: Table, names: tuple[str, ...]):
    columns = ", ".join(names)
    return text(f"INSERT INTO {table.name} ({columns}) SELECT {columns} "
                f"FROM json_populate_recordset(NULL::{table.name}, CAST(:rows AS json))")


def _json_value(value):
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, WKBElement):  # hex EWKB (with its SRID), as PostGIS's geometry input reads it
        return value.desc if value.extended else value.as_ewkb().desc
    raise TypeError(f"insert_rows cannot send {type(value).__name__}")


# The receipts of these mutation ids or device_seqs, then the incidents with these ids (incident_id set).
_SEEN_SQL = text("""
SELECT mutation_id, device_id, device_seq, NULL::uuid AS incident_id FROM sync_receipts
WHERE mutation_id = ANY(CAST(:mutation_ids AS uuid[]))
   OR (device_id = :device_id AND device_seq = ANY(CAST(:seqs AS bigint[])))
UNION ALL
SELECT NULL, NULL, NULL, id FROM incidents WHERE id = ANY(CAST(:ids AS uuid[]))
""")
_KEY_SHARE_SQL = text("""
SELECT (SELECT count(*) FROM (SELECT FROM incidents WHERE id = ANY(CAST(:incidents AS uuid[])) FOR KEY SHARE) i),
       (SELECT count(*) FROM (SELECT FROM categories WHERE id = ANY(CAST(:categories AS int[])) FOR KEY SHARE) c)
""")
_DEFER_REVISION_KEY_SQL = text("SET CONSTRAINTS fk_incident_revisions_incident_id_incidents DEFERRED")
_RESERVE_SQL = text("UPDATE sync_counter SET seq = seq + :n WHERE id = 1 RETURNING seq - :n + 1")
