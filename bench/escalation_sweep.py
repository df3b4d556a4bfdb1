"""Escalation sweep: one `escalate_overdue()` over 100,000 open cases, cold (a backlog to flag) and warm (nothing
left to do), against the same selection as bare SQL, with a split of where the time goes and a batched variant.

Run from the project root (database with PostGIS: `scripts/setup.sh gridapp_bench_dispatch`):

    .venv/bin/python -m bench.escalation_sweep [--cases 100000] [--smoke] [--no-variant]

The database is GRIDAPP_BENCH_DISPATCH_DB_URL (default gridapp_bench_dispatch); its name must end in
`_bench_dispatch` (every table is dropped). Redis database 12 is flushed at the start and the end (no RQ worker runs:
the delivery jobs escalate_overdue enqueues just wait there).

Data: a small county grid (bench.grid_queries.load_grid), the catalogue, a team with one squad, a reporter, then N
open cases loaded by one INSERT … SELECT generate_series (status dispatched/handling alternately, assigned to the
squad, due_at spread uniformly over [now − 1 day, now + 3 days), so about a quarter are overdue and ~1% fall in
the one-hour due-soon window). sync_seq is reserved as one block from sync_counter so the load skips the per-row
commit-time stamp trigger.

Measured: escalate_overdue() inside an app context (as the worker runs it), cold then warm; the same two SELECTs
as bare SQL (psycopg, the rows fetched) cold-cache-free, for a ratio; a split of the cold run (SQL by statement
kind with round trips, COMMIT including the deferred sync_seq stamps, enqueues, the rest = Python/ORM).
Variant (not app code; monkeypatched in this process only, nothing in gridapp/ is edited): the same effects in set-based
SQL (UPDATE … RETURNING, INSERT … SELECT of events and notifications, sync_seq from one reserved block,
enqueue_many in one pipeline), run on the same reset data, with a check that it wrote the same rows.
"""
import argparse
import os
import sys
import time
from collections import defaultdict
from datetime import timedelta

import psycopg
from sqlalchemy import event, select, text
from sqlalchemy.engine import make_url

from bench.grid_queries import SECRET_KEY, contention, grid_for, libpq_url, load_grid, machine_line, reset_schema

DB_ENV = "GRIDAPP_BENCH_DISPATCH_DB_URL"
DEFAULT_DB_URL = "postgresql+psycopg://gridapp:gridapp@127.0.0.1:5432/gridapp_bench_dispatch"
REDIS_URL = "redis://127.0.0.1:6379/12"


def make_app(db_url: str):
    """The app on our database and on Redis db 12 (REDIS_URL is read at create_app time, so pass it there)."""
    from gridapp import create_app
    return create_app({"SECRET_KEY": SECRET_KEY, "SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": REDIS_URL,
                       "ARGON2_TIME_COST": 1, "ARGON2_MEMORY_KIB": 1024})


def bench_db_url() -> str:
    url = os.environ.get(DB_ENV, DEFAULT_DB_URL)
    if not (make_url(url).database or "").endswith("_bench_dispatch"):
        sys.exit(f"bench: refusing to wipe {make_url(url).database!r}; its name must end in _bench_dispatch.")
    return url


LOAD = text("""
WITH block AS (UPDATE sync_counter SET seq = seq + :n WHERE id = 1 RETURNING seq - :n AS base)
INSERT INTO incidents (id, case_number, version, sync_seq, category_id, category_code_raw, description, location,
                       raw_location, cell_id, township_id, is_outside_grid, status, assigned_squad_id, condition_id,
                       due_at, reporter_id, rework_count, is_self_handled, is_ownerless, clock_suspect,
                       received_at, updated_at)
SELECT gen_random_uuid(), 'ESC' || lpad(i::text, 9, '0'), 1, block.base + i, :category_id, '06010', '基准督办 ' || i,
       ST_SetSRID(ST_MakePoint(120.001, 30.399), 4326), '{"lon": 120.001, "lat": 30.399, "crs": "wgs84"}'::jsonb,
       :cell_id, :township_id, false, CASE WHEN i % 2 = 0 THEN 'dispatched' ELSE 'handling' END, :squad_id,
       :condition_id, now() - interval '1 day' + (i::float / :n) * interval '4 days', :reporter_id, 0, false, false,
       false, now(), now()
FROM generate_series(1, :n) AS i, block
""")

# The selection escalate_overdue makes, as bare SQL (same predicates, FOR UPDATE SKIP LOCKED, rows fetched).
BARE_DUE_SOON = """SELECT * FROM incidents WHERE status IN ('dispatched', 'handling') AND due_at IS NOT NULL
    AND warned_at IS NULL AND due_at > %(now)s AND due_at <= %(now)s + interval '1 hour' FOR UPDATE SKIP LOCKED"""
BARE_OVERDUE = """SELECT * FROM incidents WHERE status IN ('dispatched', 'handling') AND due_at IS NOT NULL
    AND overdue_at IS NULL AND due_at <= %(now)s FOR UPDATE SKIP LOCKED"""


def set_up(app, cases: int) -> float:
    from gridapp.extensions import db
    from gridapp.models import AdminArea, Category, CategoryCondition, GridCell
    from gridapp.services.categories import import_catalogue, parse_catalogue_csv
    from gridapp.services.demo import DEFAULT_CATALOGUE
    from gridapp.services.squads import ensure_squad, ensure_team
    from gridapp.services.users import create_user

    with app.app_context():
        reset_schema()
        load_grid(grid_for(800))
        import_catalogue(parse_catalogue_csv(DEFAULT_CATALOGUE.read_text(encoding="utf-8")))
        township = db.session.scalar(select(AdminArea).where(AdminArea.level == "township").order_by(AdminArea.code))
        squad = ensure_squad(ensure_team(township, "基准镇综合行政执法队"), "01", "一中队", [])
        reporter = create_user("bench_reporter", "grid_worker", township, "bench-pass-123")
        category = db.session.scalar(select(Category).where(Category.code == "06010"))
        condition = db.session.scalar(select(CategoryCondition).where(CategoryCondition.category_id == category.id))
        cell = db.session.scalar(select(GridCell).order_by(GridCell.code))
        db.session.commit()
        started = time.perf_counter()
        db.session.execute(LOAD, {"n": cases, "category_id": category.id, "cell_id": cell.id,
                                  "township_id": township.id, "squad_id": squad.id, "condition_id": condition.id,
                                  "reporter_id": reporter.id})
        db.session.commit()
        load_s = time.perf_counter() - started
        db.session.execute(text("ANALYZE"))
        db.session.commit()
        db.session.remove()
    return load_s


def reset_flags(app) -> None:
    """Undo a sweep: clear the flags and delete its events and notifications (sync_seq kept, no restamp)."""
    from redis import Redis

    from gridapp.extensions import db
    with app.app_context():
        db.session.execute(text("DELETE FROM notifications"))
        db.session.execute(text("DELETE FROM incident_events WHERE action IN ('incident.due_soon', 'incident.overdue')"))
        db.session.execute(text("ALTER TABLE incidents DISABLE TRIGGER USER"))
        db.session.execute(text("UPDATE incidents SET warned_at = NULL, overdue_at = NULL, supervision_level = NULL"))
        db.session.execute(text("ALTER TABLE incidents ENABLE TRIGGER USER"))
        db.session.commit()
        db.session.execute(text("ANALYZE incidents"))
        db.session.commit()
        db.session.remove()
    Redis.from_url(REDIS_URL).flushdb()


class SqlTimer:
    """Time every statement by kind (SQLAlchemy cursor events) while active."""

    def __init__(self, engine):
        self.engine, self.times, self.counts, self.active = engine, defaultdict(float), defaultdict(int), False
        event.listen(engine, "before_cursor_execute", self.before)
        event.listen(engine, "after_cursor_execute", self.after)

    def before(self, conn, cursor, statement, params, context, executemany):
        conn.info["bench_t"] = time.perf_counter()

    def after(self, conn, cursor, statement, params, context, executemany):
        if self.active:
            kind = " ".join(statement.split()[:3])[:40]
            if statement.lstrip().upper().startswith("SELECT"):
                kind = "SELECT … FROM " + statement.split("FROM", 1)[1].split()[0] if "FROM" in statement else kind
            self.times[kind] += time.perf_counter() - conn.info["bench_t"]
            self.counts[kind] += 1


def timed_sweep(app, timer: SqlTimer | None = None) -> tuple[float, dict, dict]:
    """Run escalate_overdue once in a fresh app context; time its commit and its enqueues separately."""
    from gridapp.extensions import db
    from gridapp.jobs import dispatch
    parts = defaultdict(float)
    original_commit, original_enqueue = db.session.commit, dispatch.enqueue_deliveries

    def commit():
        started = time.perf_counter()
        try:
            return original_commit()
        finally:
            parts["COMMIT (flush of dirty incidents + deferred sync_seq stamps)"] += time.perf_counter() - started

    def enqueue_deliveries(notification_ids):
        started = time.perf_counter()
        try:
            return original_enqueue(notification_ids)
        finally:
            parts["enqueue_deliveries (RQ enqueue_many)"] += time.perf_counter() - started

    with app.app_context():
        db.session.commit = commit
        dispatch.enqueue_deliveries = enqueue_deliveries
        if timer:
            timer.times.clear(), timer.counts.clear()
            timer.active = True
        try:
            started = time.perf_counter()
            result = dispatch.escalate_overdue()
            total = time.perf_counter() - started
        finally:
            if timer:
                timer.active = False
            dispatch.enqueue_deliveries = original_enqueue
            del db.session.commit  # back to scoped_session's own method
            db.session.remove()
    return total, result, parts


def bare_sql(db_url: str) -> tuple[float, int, int]:
    with psycopg.connect(libpq_url(db_url)) as conn:
        started = time.perf_counter()
        now = conn.execute("SELECT now()").fetchone()[0]
        a = len(conn.execute(BARE_DUE_SOON, {"now": now}).fetchall())
        b = len(conn.execute(BARE_OVERDUE, {"now": now}).fetchall())
        seconds = time.perf_counter() - started
        conn.rollback()
    return seconds, a, b


# --- the set-based variant (in this process only) -------------------------------------------------

BATCH_SQL = """
WITH params AS (SELECT CAST(:now AS timestamptz) AS now, CAST(:warn AS interval) AS warn),
picked AS (
    SELECT i.id, CASE WHEN i.due_at <= p.now THEN 'overdue' ELSE 'due_soon' END AS what
    FROM incidents i, params p
    WHERE i.status IN ('dispatched', 'handling') AND i.due_at IS NOT NULL
      AND ((i.overdue_at IS NULL AND i.due_at <= p.now)
           OR (i.warned_at IS NULL AND i.due_at > p.now AND i.due_at <= p.now + p.warn))
    FOR UPDATE OF i SKIP LOCKED),
block AS (UPDATE sync_counter SET seq = seq + (SELECT count(*) FROM picked) WHERE id = 1
          RETURNING seq - (SELECT count(*) FROM picked) AS base),
numbered AS (SELECT id, what, row_number() OVER (ORDER BY id) AS n FROM picked),
upd AS (
    UPDATE incidents i SET
        warned_at = CASE WHEN n.what = 'due_soon' THEN p.now ELSE i.warned_at END,
        overdue_at = CASE WHEN n.what = 'overdue' THEN p.now ELSE i.overdue_at END,
        supervision_level = CASE WHEN n.what = 'overdue' THEN greatest(coalesce(i.supervision_level, 0), 1)
                                 ELSE i.supervision_level END,
        sync_seq = block.base + n.n
    FROM numbered n, params p, block
    WHERE i.id = n.id
    RETURNING i.id, n.what, i.status, i.due_at, i.case_number, i.category_code_raw, i.description, i.raw_location,
              i.cell_id, i.assigned_squad_id),
ev AS (
    INSERT INTO incident_events (incident_id, action, actor_role, from_status, to_status, details, created_at)
    SELECT id, 'incident.' || what, 'system', status, status,
           jsonb_build_object('due_at', to_char(due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"')), now()
    FROM upd)
INSERT INTO notifications (idempotency_key, squad_id, incident_id, kind, body, state, attempts, created_at)
SELECT u.what || ':' || u.id || ':' || to_char(u.due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
       u.assigned_squad_id, u.id, 'incident.' || u.what,
       jsonb_build_object('event', 'incident.' || u.what, 'idempotency_key',
            u.what || ':' || u.id || ':' || to_char(u.due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'),
            'incident_id', u.id::text, 'case_number', u.case_number, 'category', u.category_code_raw,
            'description', u.description, 'location', u.raw_location, 'cell_code', c.code, 'status', u.status,
            'due_at', to_char(u.due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"'), 'squad', s.code),
       'pending', 0, now()
FROM upd u LEFT JOIN grid_cells c ON c.id = u.cell_id LEFT JOIN squads s ON s.id = u.assigned_squad_id
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING id, kind
"""


def escalate_overdue_batched() -> dict:
    """The same effects as gridapp.jobs.dispatch.escalate_overdue, set-based (a proposal, not app code)."""
    from flask import current_app
    from rq import Queue, Retry

    from gridapp.extensions import db
    from gridapp.jobs import queue
    from gridapp.jobs.dispatch import DELIVERY_INTERVALS, _job_id, deliver_notification
    from gridapp.models import utcnow

    warn = timedelta(seconds=current_app.config["DUE_SOON_WARNING_SECONDS"])
    rows = db.session.execute(text(BATCH_SQL), {"now": utcnow(), "warn": warn}).all()
    db.session.commit()
    q = queue()
    retry = Retry(max=len(DELIVERY_INTERVALS), interval=DELIVERY_INTERVALS)
    for start in range(0, len(rows), 1000):
        q.enqueue_many([Queue.prepare_data(deliver_notification, (nid,), job_id=_job_id("notify", nid),
                                           result_ttl=3600, failure_ttl=30 * 24 * 3600, retry=retry)
                        for nid, _ in rows[start:start + 1000]])
    return {"due_soon": sum(1 for _, k in rows if k == "incident.due_soon"),
            "overdue": sum(1 for _, k in rows if k == "incident.overdue")}


def snapshot(app) -> tuple:
    """What a sweep wrote, comparable between the two versions."""
    from gridapp.extensions import db
    with app.app_context():
        row = db.session.execute(text("""
            SELECT (SELECT count(*) FROM incidents WHERE warned_at IS NOT NULL),
                   (SELECT count(*) FROM incidents WHERE overdue_at IS NOT NULL AND supervision_level = 1),
                   (SELECT count(*) FROM incident_events WHERE action IN ('incident.due_soon', 'incident.overdue')),
                   (SELECT count(*) FROM notifications),
                   (SELECT md5(string_agg(idempotency_key || body::text, ',' ORDER BY idempotency_key))
                    FROM notifications),
                   (SELECT count(DISTINCT sync_seq) = count(*) FROM incidents)""")).one()
        db.session.remove()
    return tuple(row)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=100_000)
    parser.add_argument("--smoke", action="store_true", help="2,000 cases")
    parser.add_argument("--no-variant", action="store_true", help="skip the set-based variant")
    args = parser.parse_args(argv)
    cases = 2_000 if args.smoke else args.cases
    db_url = bench_db_url()
    from redis import Redis
    Redis.from_url(REDIS_URL).flushdb()
    print(f"== escalation sweep over {cases:,} open cases")
    with psycopg.connect(libpq_url(db_url)) as conn:
        print(machine_line(conn))
    print(f"database {make_url(db_url).database}; contention at start: {contention()}")
    app = make_app(db_url)
    load_s = set_up(app, cases)
    print(f"loaded {cases:,} cases by INSERT … SELECT generate_series in {load_s:.2f} s")
    from gridapp.extensions import db
    with app.app_context():
        timer = SqlTimer(db.engine)

    bare_s, bare_a, bare_b = bare_sql(db_url)
    print(f"bare SQL, the same two SELECTs … FOR UPDATE SKIP LOCKED (rows fetched, rolled back): {bare_s * 1000:.1f} ms "
          f"({bare_a} due soon, {bare_b} overdue)")
    cold_s, cold, parts = timed_sweep(app, timer)
    print(f"escalate_overdue() cold: {cold_s:.2f} s → {cold}  (ratio to bare SQL selection: {cold_s / bare_s:,.0f}×)")
    sql_total = sum(timer.times.values())
    print("  split of the cold run:")
    for kind, seconds in sorted(timer.times.items(), key=lambda kv: -kv[1])[:8]:
        print(f"    {seconds:7.2f} s  {timer.counts[kind]:>7,} × {kind}")
    for label, seconds in parts.items():
        print(f"    {seconds:7.2f} s  {label}")
    rest = cold_s - sql_total - sum(parts.values())
    print(f"    {rest:7.2f} s  the rest: Python (ORM objects, flush bookkeeping, record building)")
    warm_s, warm, _ = timed_sweep(app)
    bare_warm_s, _, _ = bare_sql(db_url)
    print(f"escalate_overdue() warm (nothing left): {warm_s * 1000:.1f} ms → {warm}; bare SQL {bare_warm_s * 1000:.1f} ms "
          f"(ratio {warm_s / bare_warm_s:.1f}×)")
    from rq import Queue
    print(f"delivery jobs waiting in Redis db 12 (no worker runs): {Queue('default', connection=Redis.from_url(REDIS_URL)).count}")

    if not args.no_variant:
        reference = snapshot(app)
        reset_flags(app)
        from gridapp.jobs import dispatch
        original = dispatch.escalate_overdue
        dispatch.escalate_overdue = escalate_overdue_batched  # this process only; reverted below
        try:
            var_s, var, _ = timed_sweep(app)
            print(f"VARIANT set-based escalate (UPDATE … RETURNING + INSERT … SELECT, sync_seq block, enqueue_many): "
                  f"cold {var_s:.2f} s → {var}  ({cold_s / var_s:.1f}× faster than the app's)")
            var_warm_s, var_warm, _ = timed_sweep(app)
            print(f"VARIANT warm: {var_warm_s * 1000:.1f} ms → {var_warm}")
        finally:
            dispatch.escalate_overdue = original
        got = snapshot(app)
        same = reference[:5] == got[:5] and got[5]
        print(f"variant wrote the same flags, events, notifications (keys+bodies md5) and unique sync_seqs: "
              f"{'yes' if same else 'NO'}  app {reference} vs variant {got}")
    Redis.from_url(REDIS_URL).flushdb()
    print(f"contention at end: {contention()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
