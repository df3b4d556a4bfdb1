"""Push throughput: incidents/s through the real sync API (gunicorn on loopback, reference phones over
HTTP, batches of 100) against raw COPY of the same rows into the same tables, in the same run.

Run from the project root (the database must exist with PostGIS: `scripts/setup.sh gridapp_bench_sync`):

    .venv/bin/python -m bench.sync_push [--phones 4] [--incidents 10000] [--smoke] [--profile]

The database is GRIDAPP_BENCH_SYNC_DB_URL (default gridapp_bench_sync on 127.0.0.1); its name must end in
`_bench_sync`, because the script drops every table and rebuilds the schema with the migrations.

What is measured:
- API: N phones (threads, one keep-alive connection each, PhoneClient + HttpTransport) each push an outbox of
  reports made offline beforehand, in batches of 100, all starting together; the server is gunicorn (gthread,
  gunicorn.conf.py, as scripts/run.sh). Every report is placed in its cell by the database, gets a case
  number, a revision and a receipt, and its sync_seq (as the app does: sync/bulk.py, a transaction per run of
  plain creates).
  Rate = incidents applied / wall time from the start signal to the last response.
- COPY: the very rows the API wrote (new ids and case numbers), COPYed by one connection in one transaction
  into the same incidents table (its sync_seq trigger fires at commit as for the app); and a second variant
  that COPYs the incidents plus their revisions and receipts (every row the API path writes).
- While the API runs, a sampler reads pg_stat_activity every 10 ms: what the busy backends wait on
  (row locks on the sync counter or the case-number counter, WAL flush, CPU) is where serialisation shows.
- An in-process split (Flask test client, one phone): the mean time per mutation in each step of the push
  path and in each kind of SQL statement, with round trips counted.

Targets are printed as MET or MISSED and never change the exit status; the exit status is 1 only when the
push itself went wrong (an error, or a report not applied, stamped, revised and receipted exactly once).
"""
import argparse
import gzip
import json
import math
import os
import random
import re
import runpy
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from sqlalchemy import select, text
from sqlalchemy.engine import make_url

from bench.grid_queries import (
    BLOCK,
    SECRET_KEY,
    Split,
    contention,
    free_port,
    grid_for,
    libpq_url,
    load_grid,
    machine_line,
    make_app,
    reset_schema,
    wait_until_serving,
)
from sync.client import PhoneClient, Response
from sync.simulate import Cell, Phone, RecordingTransport, make_reports, push

ROOT = Path(__file__).resolve().parent.parent
DB_ENV = "GRIDAPP_BENCH_SYNC_DB_URL"
DEFAULT_DB_URL = "postgresql+psycopg://gridapp:gridapp@127.0.0.1:5432/gridapp_bench_sync"
REDIS_URL = "redis://127.0.0.1:6379/13"
WORKER_PASSWORD = "bench-pass-123"
BATCH = 100
TARGET_RATE = 2000.0  # incidents/s through the API


# --- shared with bench.sync_pull and bench.sync_outage --------------------------------------------

def bench_db_url(explicit: str | None = None) -> str:
    url = explicit or os.environ.get(DB_ENV, DEFAULT_DB_URL)
    name = make_url(url).database or ""
    if not name.endswith("_bench_sync"):
        sys.exit(f"bench: refusing to wipe database {name!r}; its name must end in _bench_sync.")
    return url


def bench_app(db_url: str):
    app = make_app(db_url)
    app.config["REDIS_URL"] = REDIS_URL
    return app


def build_world(app, cells: int, workers: int, cells_per_worker: int) -> dict:
    """Fresh schema, a county grid of `cells` cells (bench.grid_queries.load_grid), the default catalogue
    and `workers` grid workers, each holding `cells_per_worker` consecutive cells of one village.

    :returns: {"grid", "workers": [(username, [Cell...])], "load_s"}.
    """
    from gridapp.extensions import db
    from gridapp.models import AdminArea, GridCell
    from gridapp.services.categories import import_catalogue, parse_catalogue_csv
    from gridapp.services.demo import DEFAULT_CATALOGUE
    from gridapp.services.users import assign_cells, create_user

    per_village = max(1, (BLOCK * BLOCK) // cells_per_worker)
    grid = grid_for(max(cells, 2 * BLOCK * BLOCK, math.ceil(workers / per_village) * BLOCK * BLOCK))
    started = time.perf_counter()
    with app.app_context():
        reset_schema()
        load_grid(grid)
        import_catalogue(parse_catalogue_csv(DEFAULT_CATALOGUE.read_text(encoding="utf-8")))
        villages = db.session.scalars(select(AdminArea).where(AdminArea.level == "village")
                                      .order_by(AdminArea.code)).all()
        out = []
        for number in range(workers):
            village = villages[number // per_village]
            offset = (number % per_village) * cells_per_worker
            rows = db.session.scalars(select(GridCell).where(GridCell.village_id == village.id)
                                      .order_by(GridCell.code).offset(offset).limit(cells_per_worker)).all()
            user = create_user(f"bench_worker{number + 1}", "grid_worker", village.parent, WORKER_PASSWORD)
            assign_cells(user, rows)
            boxes = db.session.execute(text(
                "SELECT code, ST_XMin(geom), ST_YMin(geom), ST_XMax(geom), ST_YMax(geom) FROM grid_cells "
                "WHERE id = ANY(:ids) ORDER BY code"), {"ids": [c.id for c in rows]}).all()
            out.append((user.username, [Cell.box(*b) for b in boxes]))
        db.session.commit()
        db.session.execute(text("ANALYZE"))
        # ANALYZE left the still-empty incident tables with statistics that say "0 rows", and each server
        # connection caches the plans of its foreign-key checks at its first reports: a plan made for an
        # empty incidents table is a sequential scan, kept for the whole run (no autovacuum within it), so
        # every revision's key check would read the whole table inside the sync-counter window (53 ms a
        # batch at 10,000 incidents). TRUNCATE (of empty tables) forgets those statistics, as on a freshly
        # migrated database, whose autovacuum replans as the table grows.
        db.session.execute(text("TRUNCATE incidents, incident_revisions, sync_receipts CASCADE"))
        db.session.commit()
        db.session.remove()
    return {"grid": grid, "workers": out, "load_s": time.perf_counter() - started}


def server_settings(workers: int | None = None, threads: int | None = None) -> tuple[int, int]:
    """The gunicorn workers and threads to run: gunicorn.conf.py's (what scripts/run.sh runs) unless given."""
    conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    return workers or conf["workers"], threads or conf["threads"]


@contextmanager
def gunicorn(db_url: str, workers: int | None = None, threads: int | None = None, extra_pythonpath: str | None = None,
             app_spec: str = "wsgi:app", extra_env: dict | None = None):
    """Run gunicorn (gunicorn.conf.py, as scripts/run.sh) on a free loopback port; yield the base URL; always
    stop it."""
    with gunicorn_process(db_url, workers, threads, extra_pythonpath, app_spec, extra_env) as (url, _):
        yield url


@contextmanager
def gunicorn_process(db_url: str, workers: int | None = None, threads: int | None = None,
                     extra_pythonpath: str | None = None,
                     app_spec: str = "wsgi:app", extra_env: dict | None = None):
    """As gunicorn(), yielding (base URL, the master's Popen) for callers that watch the processes."""
    port = free_port()
    env = {**os.environ, "GRIDAPP_SECRET_KEY": SECRET_KEY, "GRIDAPP_SQLALCHEMY_DATABASE_URI": db_url,
           "GRIDAPP_REDIS_URL": REDIS_URL, "GRIDAPP_LOG_LEVEL": "WARNING", **(extra_env or {})}
    workers, threads = server_settings(workers, threads)
    cmd = [str(Path(sys.executable).parent / "gunicorn"), "--bind", f"127.0.0.1:{port}",
           "--workers", str(workers), "--threads", str(threads),
           "--keep-alive", "75", "--timeout", "300", "--backlog", "2048"]
    if extra_pythonpath:
        cmd += ["--pythonpath", extra_pythonpath]
    cmd.append(app_spec)
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(proc, port, {}, "/api/v1/openapi.json", log, timeout=60)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.seek(0)
        tail = log.read().decode(errors="replace")
        log.close()
        errors = [line for line in tail.splitlines() if "Traceback" in line or " ERROR " in line]
        if errors:
            print(f"gunicorn log had {len(errors)} error line(s); last lines:\n{tail[-1500:]}")


def percentile(values, q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(q) - 1]


def ms(values) -> str:
    """p50 / p95 / max of durations in seconds, as milliseconds."""
    if not values:
        return "n/a"
    return (f"p50 {percentile(values, 50) * 1000:.1f} ms, p95 {percentile(values, 95) * 1000:.1f} ms, "
            f"max {max(values) * 1000:.1f} ms (n={len(values)})")


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def header(title: str, db_url: str) -> None:
    print(f"== {title}")
    with psycopg.connect(libpq_url(db_url)) as conn:
        print(machine_line(conn))
        settings = dict(conn.execute("SELECT name, setting FROM pg_settings WHERE name IN ('shared_buffers', "
                                     "'synchronous_commit', 'max_connections', 'work_mem')").fetchall())
    print("PostgreSQL settings: " + ", ".join(f"{k} {v}" for k, v in sorted(settings.items())))
    print(f"database {make_url(db_url).database}; contention at start: {contention()}")


class WaitSampler:
    """Poll pg_stat_activity (every `interval` s, in a thread) and count what the database's busy backends wait on."""

    def __init__(self, db_url: str, interval: float = 0.01, limit_s: float = 3600):
        self.libpq, self.interval, self.limit_s = libpq_url(db_url), interval, limit_s
        self.counts: Counter = Counter()
        self.samples = 0
        self.backend_pid = None
        self._started = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        deadline = time.monotonic() + self.limit_s
        with psycopg.connect(self.libpq, autocommit=True) as conn:
            self.backend_pid = conn.info.backend_pid
            self._started.set()
            while not self._stop.is_set() and time.monotonic() < deadline:
                rows = conn.execute("""
                    SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU (no wait)'), left(query, 60)
                    FROM pg_stat_activity
                    WHERE datname = current_database() AND state = 'active' AND pid <> pg_backend_pid()
                      AND backend_type = 'client backend'""").fetchall()
                self.samples += 1
                for wait, query in rows:
                    self.counts[(wait, _statement_kind(query))] += 1
                time.sleep(self.interval)

    def __enter__(self):
        self._thread.start()
        self._started.wait(timeout=30)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def report(self, top: int = 12) -> list[str]:
        if not self.samples:
            return ["(no samples)"]
        lines = [f"{self.samples} samples; mean busy backends {sum(self.counts.values()) / self.samples:.2f}"]
        total = sum(self.counts.values()) or 1
        for (wait, kind), n in self.counts.most_common(top):
            lines.append(f"  {100 * n / total:5.1f}%  {wait:<34} during {kind}")
        return lines


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds spent during the timed push by the gunicorn workers, by the database's client backends
    (read from /proc: the server is local) and by the phone threads (each adds its own thread_time)."""

    def __init__(self, db_url: str, master_pid: int, exclude_pids=()):
        self.libpq, self.master_pid, self.exclude = libpq_url(db_url), master_pid, set(exclude_pids)
        self.phones = 0.0
        self._lock = threading.Lock()

    def _snapshot(self) -> tuple[dict, dict]:
        children = Path(f"/proc/{self.master_pid}/task/{self.master_pid}/children").read_text().split()
        with psycopg.connect(self.libpq, autocommit=True) as conn:
            pids = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                "AND backend_type = 'client backend' AND pid <> pg_backend_pid()").fetchall()
        return ({int(p): proc_cpu_s(int(p)) for p in children},
                {pid: proc_cpu_s(pid) for (pid,) in pids if pid not in self.exclude})

    def start(self):
        self._start = self._snapshot()

    def stop(self):
        end = self._snapshot()
        self.app, self.db = (sum(v - start.get(pid, 0.0) for pid, v in now.items())
                             for start, now in zip(self._start, end, strict=True))

    def phone(self, work):
        def timed(phone):
            began = time.thread_time()
            try:
                return work(phone)
            finally:
                with self._lock:
                    self.phones += time.thread_time() - began
        return timed

    def report(self, reports: int) -> str:
        per = [1000 * v / max(reports, 1) for v in (self.phones, self.app, self.db)]
        return (f"CPU per report: phones {per[0]:.2f} ms + gunicorn {per[1]:.2f} ms + PostgreSQL backends "
                f"{per[2]:.2f} ms = {sum(per):.2f} ms (2 cores: ≤ {2000 / sum(per):,.0f} reports/s)")


def _statement_kind(query: str) -> str:
    q = " ".join((query or "").split()).upper()
    for needle, label in (("COMMIT", "COMMIT (deferred sync_seq stamp + WAL flush)"),
                          ("CASE_NUMBER_COUNTERS", "case-number counter UPSERT"),
                          ("SET LIKELY_DUPLICATE_OF", "UPDATE likely_duplicate_of"),
                          ("FROM INCIDENTS O, INCIDENTS N", "duplicate search"),
                          ("INSERT INTO INCIDENTS", "INSERT incident"), ("INSERT INTO INCIDENT_REVISIONS", "INSERT revision"),
                          ("INSERT INTO SYNC_RECEIPTS", "INSERT receipt"), ("GRID_CELLS", "cell lookup"),
                          ("SYNC_RECEIPTS", "receipt lookup"), ("UPDATE DEVICES", "UPDATE device"),
                          ("BEGIN", "BEGIN"), ("SELECT", "other SELECT")):
        if needle in q:
            return label
    return q[:40] or "?"


def make_phone(base_url: str, index: int, username: str, cells: list[Cell], workdir: Path,
               timeout: float = 300, register: bool = True) -> Phone:
    """Register a reference phone over HTTP (no pull; the bench gives it its cells), or reopen its store."""
    from sync.client import HttpTransport

    transport = RecordingTransport(HttpTransport(base_url, timeout=timeout))
    client = PhoneClient(transport, str(workdir / f"phone-{index}.sqlite"))
    if register:
        client.register(username, WORKER_PASSWORD)
    return Phone(index, username, client, transport, cells=cells, categories=["06010", "06011", "01001"])


def fresh_connection(phone: Phone) -> None:
    """Drop the phone's keep-alive connection: a phone back from an outage opens a new one (and one idle past
    the server's keep-alive would fail on its first request: HttpTransport does not retry)."""
    inner = phone.transport.inner
    if getattr(inner, "connection", None) is not None:
        inner.connection.close()
        inner.connection = None


def run_phones(count: int, setup, work, finish, limit_s: float, on_start=None) -> tuple[float, list, list]:
    """Run each phone in its own thread (SQLite stores are per thread): setup(i) → phone, then, all threads
    released at once, work(phone), then finish(phone) → result (untimed). Bounded by `limit_s`.
    `on_start()`, if given, runs in the calling thread once every phone is set up, just before the release.

    :returns: (wall seconds from the release to the end of the last work(), results by index, errors).
    """
    ready = threading.Barrier(count + 1, timeout=limit_s)
    barrier = threading.Barrier(count + 1, timeout=limit_s)
    results, ends, errors = [None] * count, [None] * count, []

    def body(index):
        phone = None
        try:
            phone = setup(index)
        except Exception as exc:  # noqa: BLE001 - reported, never hidden; the other phones still run
            errors.append(f"phone {index} (set-up): {type(exc).__name__}: {exc}")
        try:
            ready.wait()
            barrier.wait()
        except threading.BrokenBarrierError:
            errors.append(f"phone {index}: the start barrier broke (time limit)")
            return
        try:
            if phone is not None:
                work(phone)
        except Exception as exc:  # noqa: BLE001
            errors.append(f"phone {index}: {type(exc).__name__}: {exc}")
        ends[index] = time.perf_counter()
        if phone is not None:
            try:
                results[index] = finish(phone)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"phone {index} (finish): {type(exc).__name__}: {exc}")
            finally:
                phone.client.db.close()

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    try:
        ready.wait()  # every phone set up
        if on_start is not None:
            on_start()
        barrier.wait()
    except threading.BrokenBarrierError:
        pass
    began = time.perf_counter()
    deadline = time.monotonic() + limit_s
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in threads):
        errors.append(f"time limit {limit_s:.0f} s reached with threads still running")
    wall = max([e for e in ends if e is not None], default=began) - began
    return wall, results, errors


# --- COPY baseline --------------------------------------------------------------------------------

INCIDENT_COLUMNS = ("id, case_number, version, category_id, category_code_raw, description, location, raw_location, "
                    "gps_accuracy_m, cell_id, township_id, is_outside_grid, status, reporter_id, device_id, "
                    "created_at_device, clock_suspect")
# The same rows with new ids (md5 of the old id) and new case numbers; sync_seq left NULL for the trigger.
_COPY_OUT = {
    "incidents": """COPY (SELECT md5(id::text || :tag)::uuid, :tag || case_number, version,
        row_number() OVER (ORDER BY sync_seq) AS seq_offset, category_id,
        category_code_raw, description, location, raw_location, gps_accuracy_m, cell_id, township_id,
        is_outside_grid, status, reporter_id, device_id, created_at_device, clock_suspect
        FROM incidents WHERE id = ANY(:ids)) TO STDOUT""",
    "incident_revisions": """COPY (SELECT md5(incident_id::text || :tag)::uuid, version, md5(mutation_id::text || :tag)::uuid,
        source, actor_id, changes FROM incident_revisions WHERE incident_id = ANY(:ids)) TO STDOUT""",
    "sync_receipts": """COPY (SELECT md5(mutation_id::text || :tag)::uuid, device_id, device_seq + :seq_shift, user_id,
        request_sha256, status, result FROM sync_receipts WHERE (result->>'incident_id')::uuid = ANY(:ids)) TO STDOUT""",
}
_COPY_IN = {
    "incidents": f"COPY incidents ({INCIDENT_COLUMNS.replace('version,', 'version, sync_seq,')}) FROM STDIN",
    "incident_revisions": "COPY incident_revisions (incident_id, version, mutation_id, source, actor_id, changes) FROM STDIN",
    "sync_receipts": "COPY sync_receipts (mutation_id, device_id, device_seq, user_id, request_sha256, status, result) "
                     "FROM STDIN",
}


def _psycopg_sql(sql: str) -> str:
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql)


def _with_seq(data: bytes, base: int | None) -> bytes:
    """Fill the 4th column (sync_seq): NULL for the commit-time stamp, or base + the row's offset."""
    out = []
    for line in data.splitlines():
        fields = line.split(b"\t")
        fields[3] = b"\\N" if base is None else str(base + int(fields[3])).encode()
        out.append(b"\t".join(fields))
    return b"\n".join(out) + (b"\n" if out else b"")


def copy_baseline(db_url: str, ids: list, tables: tuple[str, ...], tag: str, reserve: bool = False) -> tuple[float, int]:
    """COPY the API's rows (re-keyed by `tag`) into the same tables in one transaction; return (s, rows).

    sync_seq is left NULL, so the app's deferred trigger stamps each row at COMMIT (its cost grows with the
    square of the rows in one transaction), or with `reserve`, a block is taken from sync_counter in one
    UPDATE inside the same transaction and the rows carry their numbers (no trigger work)."""
    libpq = libpq_url(db_url)
    data = {}
    with psycopg.connect(libpq) as conn:
        for table in tables:
            buffer = bytearray()
            with conn.cursor().copy(_psycopg_sql(_COPY_OUT[table]),
                                    {"ids": ids, "tag": tag, "seq_shift": 10_000_000 * (1 + ord(tag[0]) - ord("a"))}) as copy:
                for chunk in copy:
                    buffer += chunk
            data[table] = bytes(buffer)
    rows = sum(d.count(b"\n") for d in data.values())
    with psycopg.connect(libpq) as conn:
        started = time.perf_counter()
        with conn.cursor() as cur:
            base = None
            if reserve:
                n = data["incidents"].count(b"\n")
                base = cur.execute("UPDATE sync_counter SET seq = seq + %s WHERE id = 1 RETURNING seq - %s",
                                   (n, n)).fetchone()[0]
            for table in tables:
                with cur.copy(_COPY_IN[table]) as copy:
                    copy.write(_with_seq(data[table], base) if table == "incidents" else data[table])
        conn.commit()  # the deferred sync_seq stamps run here, as for the API
        seconds = time.perf_counter() - started
    return seconds, rows


# --- in-process split of the push path ------------------------------------------------------------

class WsgiTransport:
    """The reference client straight into the Flask app (same code path as HTTP, no socket)."""

    def __init__(self, app):
        self.client = app.test_client()

    def __call__(self, method, path, headers, body):
        response = self.client.open(path, method=method, headers=headers, data=body)
        data = response.get_data()
        if response.headers.get("Content-Encoding") == "gzip":
            data = gzip.decompress(data)
        return Response(response.status_code, json.loads(data) if data else None)


# SQL statement → label, first match wins (the statements SQLAlchemy renders for the push path).
SQL_KINDS = [
    (r"^\s*SELECT .*FROM api_tokens", "auth: token + user + area"),
    (r"FROM devices", "device lookup"),
    (r"^\s*UPDATE devices", "UPDATE device (clock offset)"),
    (r"FROM sync_receipts\s+WHERE sync_receipts\.mutation_id IN", "receipts + device_seq of a run (one lookup)"),
    (r"FROM sync_receipts\s+WHERE mutation_id = ANY", "receipts + device_seq of a run (one lookup)"),
    (r"FROM sync_receipts\s+WHERE sync_receipts\.mutation_id = ", "receipt lookup by mutation_id"),
    (r"FROM sync_receipts\s+WHERE sync_receipts\.device_id", "receipt lookup by (device, seq)"),
    (r"FROM incidents\s+WHERE incidents\.id IN", "incidents exist? (one lookup for a run)"),
    (r"^SELECT id FROM incidents WHERE id = ANY", "incidents exist? (one lookup for a run)"),
    (r"FROM incidents\s+WHERE incidents\.id = %\(pk_1\)s", "incident exists? (get by id)"),
    (r"grid_cells|grid_locate", "cell lookup (ST_Intersects)"),
    (r"FROM categories", "category lookup"),
    (r"FROM admin_areas", "county code of township"),
    (r"case_number_counters", "case-number counter UPSERT"),
    (r"UPDATE sync_counter", "sync_seq block (one UPDATE per run)"),
    (r"^\s*INSERT INTO incidents", "INSERT incident(s)"),
    (r"^\s*INSERT INTO incident_revisions", "INSERT revision(s)"),
    (r"^\s*INSERT INTO sync_receipts", "INSERT receipt(s)"),
    (r"FROM worker_scopes", "scope lookup"),
    (r"WITH new AS", "duplicate search (ST_DWithin)"),
    (r"FROM incidents", "other incidents SELECT"),
    (r"", "other SQL"),
]


def push_split(app, username: str, cells: list[Cell], mutations: int, seed: int, workdir: Path) -> list:
    """Push `mutations` reports from one in-process phone with the push path's functions wrapped; return
    (label, mean ms per mutation, round trips per mutation) rows."""
    import gridapp.api.sync as api_sync
    import gridapp.services.incidents as incidents
    import sync.bulk as bulk
    import sync.push as push_module
    from gridapp.extensions import db

    rng = random.Random(seed)
    transport = WsgiTransport(app)
    client = PhoneClient(transport, str(workdir / "split-phone.sqlite"))
    client.register(username, WORKER_PASSWORD)
    phone = Phone(0, username, client, None, cells=cells, categories=["06010"])
    make_reports(phone, min(BATCH, mutations), rng, label="warm-up")
    client.push(batch_size=BATCH)  # warm: pool, prepared caches, code paths
    make_reports(phone, mutations, rng, label="split")
    with app.app_context():
        dialect = db.engine.dialect

    def sql_label(cursor, statement, *rest):
        for pattern, label in SQL_KINDS:
            if re.search(pattern, statement, re.S):
                return "SQL " + label

    top = [
        ("push_batch (the whole batch, incl. COMMITs)", api_sync, "push_batch"),
        ("  screen: validation (marshmallow), CRS, receipt/seq/exists/cell lookups", bulk, "screen"),
        ("    cells_at (one cell lookup for the batch)", incidents, "cells_at"),
        ("  apply_run: set-based creates + COMMIT", bulk, "apply_run"),
        ("    _insert_run (before COMMIT)", bulk, "_insert_run"),
        ("      likely_duplicates", incidents, "likely_duplicates"),
        ("      case_numbers", incidents, "case_numbers"),
        ("      new_incident_values", incidents, "new_incident_values"),
        ("  one-by-one transactions: apply + COMMIT (anything unusual)", bulk, "apply_in_own_transaction"),
        ("    apply_mutation", push_module, "apply_mutation"),
        ("_add_applied_seq (once per batch)", api_sync, "_add_applied_seq"),
    ]
    started = time.perf_counter()
    with Split() as split:
        for label, owner, attr in top:
            split.wrap(owner, attr, label)
        # The view registered in the app holds the undecorated function: only module globals it looks up
        # at call time can be wrapped; the total is timed from outside.
        split.wrap(dialect, "do_execute", sql_label)
        split.wrap(dialect, "do_commit", "SQL COMMIT (deferred stamp + WAL flush)")
        split.wrap(dialect, "do_rollback", "SQL ROLLBACK (teardown)")
        client.push(batch_size=BATCH)
    total_ms = (time.perf_counter() - started) * 1000
    client.db.close()
    rows = [("total per mutation, in-process (wall)", total_ms / mutations, None)]
    for label, _, _ in top:
        if split.calls[label]:
            rows.append((label, split.ms[label] / mutations, None))
    sql = sorted(((k, v) for k, v in split.ms.items() if k.startswith("SQL ")), key=lambda kv: -kv[1])
    sql_total = sum(v for _, v in sql)
    rows.append((f"all SQL round trips (incl. COMMIT): {sum(split.calls[k] for k, _ in sql) / mutations:.1f} "
                 "per mutation", sql_total / mutations, None))
    for label, value in sql:
        rows.append(("  " + label, value / mutations, split.calls[label] / mutations))
    rows.append(("Python outside SQL (ORM, marshmallow, Flask, JSON, gzip, client)",
                 (total_ms - sql_total) / mutations, None))
    return rows


def print_split(rows) -> None:
    print(f"\n{'where one pushed report spends its time (in-process, 1 phone)':<78} {'ms':>7} {'calls':>6}")
    for label, value, calls in rows:
        print(f"  {label:<76} {value:7.3f} {'' if calls is None else f'{calls:6.2f}'}")


# --- main -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scale:
    phones: int
    incidents: int
    cells: int
    split: int


SMOKE = Scale(phones=2, incidents=100, cells=800, split=20)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.sync_push", description=__doc__.split("\n")[0])
    parser.add_argument("--phones", type=int, default=4, help="concurrent phones (default 4)")
    parser.add_argument("--incidents", type=int, default=10_000, help="reports pushed in all (default 10,000)")
    parser.add_argument("--cells", type=int, default=10_000, help="grid cells (default 10,000)")
    parser.add_argument("--split", type=int, default=1000, help="reports in the in-process split (default 1,000; "
                        "0 skips it)")
    parser.add_argument("--gunicorn-workers", type=int, help="default: gunicorn.conf.py's")
    parser.add_argument("--gunicorn-threads", type=int, help="default: gunicorn.conf.py's")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--db-url", help=f"default ${DB_ENV} or {DEFAULT_DB_URL}")
    parser.add_argument("--smoke", action="store_true", help="tiny scale (2 phones, 200 reports) in seconds")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of the in-process push")
    parser.add_argument("--pythonpath", help=argparse.SUPPRESS)  # experiments: a patched wsgi module
    parser.add_argument("--app-spec", default="wsgi:app", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.scale = SMOKE if args.smoke else Scale(args.phones, args.incidents, args.cells, args.split)
    if args.scale.phones < 1 or args.scale.incidents < args.scale.phones:
        parser.error("need at least one phone and one report per phone")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    scale = args.scale
    db_url = bench_db_url(args.db_url)
    per_phone = scale.incidents // scale.phones
    total = per_phone * scale.phones
    header(f"gridapp sync push benchmark: {scale.phones} phones × {per_phone:,} reports = {total:,} incidents, "
           f"batches of {BATCH}, grid {scale.cells:,} cells, seed {args.seed}", db_url)
    app = bench_app(db_url)
    world = build_world(app, scale.cells, scale.phones + 1, 100)
    print(f"set-up (migrations + grid {world['grid'].cells:,} cells + catalogue + {scale.phones + 1} workers): "
          f"{world['load_s']:.1f} s")
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="bench_sync_push_"))
    results = {}
    with gunicorn_process(db_url, args.gunicorn_workers, args.gunicorn_threads, args.pythonpath,
                          args.app_spec) as (base, master):
        workers, threads = server_settings(args.gunicorn_workers, args.gunicorn_threads)
        print(f"server: gunicorn gthread {workers} workers × {threads} threads at {base} "
              f"({args.app_spec})")
        workers = world["workers"][:scale.phones]
        seeds = [rng.random() for _ in workers]

        def setup(i):  # offline: the outbox fills before the timed push
            phone = make_phone(base, i, workers[i][0], workers[i][1], workdir)
            make_reports(phone, per_phone, random.Random(seeds[i]), label="bench")
            return phone

        def finish(phone):
            return {"counts": phone.counts, "left": len(phone.client.outbox()),
                    "batches": phone.transport.seconds("POST", "/api/v1/sync/mutations"),
                    "ids": [r["incident_id"] for r in phone.client.results().values() if r.get("incident_id")]}

        with WaitSampler(db_url) as sampler:
            meter = CpuMeter(db_url, master.pid, exclude_pids=[sampler.backend_pid])
            wall, outcomes, errors = run_phones(len(workers), setup, meter.phone(lambda ph: push(ph, BATCH)),
                                                finish, limit_s=1800, on_start=meter.start)
            meter.stop()
        outcomes = [o for o in outcomes if o]
        batch_times = [s for o in outcomes for s in o["batches"]]
        counts = Counter()
        for o in outcomes:
            counts.update(o["counts"])
        ids = [i for o in outcomes for i in o["ids"]]
        left = sum(o["left"] for o in outcomes)
    applied = counts.get("applied", 0)
    results["api"] = applied / wall
    print(f"\nAPI push: {applied:,} applied in {wall:.2f} s = {results['api']:,.0f} incidents/s "
          f"(statuses {dict(counts)}, outbox left {left}, errors {len(errors)})")
    for line in errors[:5]:
        print("  error: " + line)
    print(f"  batch request latency ({BATCH} mutations): {ms(batch_times)}")
    print("  " + meter.report(applied))
    print("  what busy backends were doing (pg_stat_activity every 10 ms):")
    for line in sampler.report():
        print("  " + line)

    with psycopg.connect(libpq_url(db_url)) as conn:
        check = conn.execute("""SELECT (SELECT count(*) FROM incidents), (SELECT count(*) FROM incidents
            WHERE sync_seq IS NULL), (SELECT count(*) FROM incident_revisions), (SELECT count(*) FROM sync_receipts)
            """).fetchone()
    print(f"check: incidents {check[0]:,} (unstamped {check[1]}), revisions {check[2]:,}, receipts {check[3]:,} "
          f"(expected {total:,} each)")

    ids = [uuid.UUID(i) for i in ids]
    copy_s, copy_rows = copy_baseline(db_url, ids, ("incidents",), "a")
    results["copy"] = len(ids) / copy_s
    copy3_s, copy3_rows = copy_baseline(db_url, ids, ("incidents", "incident_revisions", "sync_receipts"), "b")
    results["copy3"] = len(ids) / copy3_s
    copyr_s, _ = copy_baseline(db_url, ids, ("incidents", "incident_revisions", "sync_receipts"), "c", reserve=True)
    results["copyr"] = len(ids) / copyr_s
    print(f"\nCOPY of the same {len(ids):,} incident rows into incidents (1 transaction, sync_seq stamped at commit): "
          f"{copy_s:.2f} s = {results['copy']:,.0f} incidents/s")
    print(f"COPY of incidents + revisions + receipts ({copy3_rows:,} rows, every row the API writes): "
          f"{copy3_s:.2f} s = {results['copy3']:,.0f} incidents/s")
    print(f"COPY of the same three tables, sync_seq reserved from the counter in one UPDATE (no per-row stamp): "
          f"{copyr_s:.2f} s = {results['copyr']:,.0f} incidents/s")
    print(f"contention after the timed runs: {contention()}")

    if not results["api"]:
        print("no incident was pushed: no ratio, no target")
        return 1
    print(f"\nratio API / COPY incidents: {results['api'] / results['copy']:.3f} "
          f"(COPY is {results['copy'] / results['api']:.1f}× faster); "
          f"API / COPY all three tables: {results['api'] / results['copy3']:.3f}; "
          f"API / COPY three tables with reserved sync_seq: {results['api'] / results['copyr']:.3f}")
    print(f"target: API push ≥ {TARGET_RATE:,.0f} incidents/s: {results['api']:,.0f} → "
          f"{verdict(results['api'] >= TARGET_RATE and not errors and applied == total)}")

    complete = not errors and applied == total and check == (total, 0, total, total)
    print(f"check: every report applied once, stamped, with its revision and receipt: {'yes' if complete else 'NO'}")
    username, cells = world["workers"][scale.phones]
    if scale.split > 0:
        print_split(push_split(app, username, cells, scale.split, args.seed, workdir))
    if args.profile:
        profile_push(app, world["workers"][scale.phones], scale.split, args.seed, workdir)
    return 0 if complete else 1


def profile_push(app, worker, mutations: int, seed: int, workdir: Path, top: int = 35) -> None:
    import cProfile
    import pstats

    username, cells = worker
    client = PhoneClient(WsgiTransport(app), str(workdir / "profile-phone.sqlite"))
    client.register(username, WORKER_PASSWORD)
    phone = Phone(0, username, client, None, cells=cells, categories=["06010"])
    make_reports(phone, mutations, random.Random(seed + 1), label="profile")
    profiler = cProfile.Profile()
    profiler.enable()
    client.push(batch_size=BATCH)
    profiler.disable()
    for order in ("cumulative", "tottime"):
        print(f"\ncProfile of {mutations} in-process pushed reports (top {top} by {order}):")
        pstats.Stats(profiler, stream=sys.stdout).strip_dirs().sort_stats(order).print_stats(top)


if __name__ == "__main__":
    sys.exit(main())
