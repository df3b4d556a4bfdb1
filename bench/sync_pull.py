"""Pull latency with 1,000,000 incidents: GET /api/v1/sync/changes?limit=500 over HTTP (gunicorn on loopback)
against the page's bare SQL through psycopg, in the same run.

Run from the project root (the database must exist with PostGIS: `scripts/setup.sh gridapp_bench_sync`):

    .venv/bin/python -m bench.sync_pull [--incidents 1000000] [--cells 10000] [--samples 200] [--smoke]

Database: GRIDAPP_BENCH_SYNC_DB_URL (default gridapp_bench_sync), wiped and rebuilt by the migrations.

Data. A county grid of --cells cells (bench.grid_queries.load_grid; villages of 20 × 20 cells), the default
catalogue, and two grid workers: `bench_worker1` holds one whole village (--scope-cells, default 400 cells:
a heavy scope), `bench_worker2` another village and is the reporter of the bulk rows (so worker 1's "own"
stream stays small). N incidents are loaded by ONE `INSERT … SELECT generate_series` straight into
`incidents`, each in a cell picked uniformly at random, at a random point inside it, with every NOT NULL
column filled. Their sync_seq comes from the same counter the app uses, reserved in one `UPDATE sync_counter
SET seq = seq + N` inside the load's transaction (the row lock is held to commit, as the app's stamp does).
The app's deferred per-row stamp trigger is not used for the load: within one transaction its cost grows
with the square of the rows (every stamp updates the one counter row again, and each update walks that row's
version chain), measured at 257 s for 100,000 rows here. Then VACUUM ANALYZE.

Requests (one keep-alive connection, Accept-Encoding: gzip like the reference client, body read, not parsed):
- first page: no cursor (from 0), 500 changes;
- mid-stream: cursors taken at 25 %, 50 % and 75 % of a full walk of worker 1's stream;
- incremental: after catching up, 10 new reports are pushed in worker 1's cells; the pull from the caught-up
  cursor returns those few changes; and a pull with nothing new.
Baseline: the page's main statements (imported from sync.pull so they cannot drift) through psycopg with
prepare=True and the same parameters: the windowed scan (_INCREMENTAL_SQL: sync_seq and row address, at the
window the app ends with, found by the app's own incidents_in_window) and the JSON of its first 500 rows by
their row addresses (_INCIDENT_CHANGES_SQL); and all the statements one page runs (the token's principal,
sync.pull's context, the other streams, the ack), in one REPEATABLE READ transaction. Printed: p50/p95/p99 per
kind, ratios, and the target (p95 < 50 ms).
"""
import argparse
import gzip
import http.client
import json
import random
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import psycopg
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url

from bench.grid_queries import SECRET_KEY, contention, libpq_url, summarize, with_pyformat
from bench.sync_push import bench_app, bench_db_url, build_world, gunicorn, header, make_phone, verdict
from gridapp.services.auth import digest
from sync import protocol as p
from sync.simulate import make_reports, push

PAGE = 500
TARGET_P95_MS = 50.0

_LOAD_SQL = """
INSERT INTO incidents (id, case_number, version, sync_seq, category_id, category_code_raw, description, location,
                       raw_location, gps_accuracy_m, cell_id, township_id, is_outside_grid, status, reporter_id,
                       clock_suspect, created_at_device)
SELECT gen_random_uuid(), 'B' || lpad(s.g::text, 12, '0'), 1, %(base)s + s.g, %(category_id)s, '06010',
       'bulk report ' || s.g || ': rubbish left at the corner of the lane, reported for the benchmark',
       ST_SetSRID(ST_MakePoint(pt.x, pt.y), 4326),
       jsonb_build_object('lon', pt.x, 'lat', pt.y, 'crs', 'wgs84'), round((3 + s.ra * 27)::numeric, 1),
       c.id, c.township_id, false, 'reported', %(reporter_id)s, false,
       now() - make_interval(secs => s.ra * 86400 * 30)
FROM (SELECT g, floor(random() * %(cells)s)::int AS k, random() AS rx, random() AS ry, random() AS ra
      FROM generate_series(1, %(n)s) AS g) AS s
JOIN bench_cell_pick c ON c.n = s.k
CROSS JOIN LATERAL (SELECT c.x0 + (0.02 + 0.96 * s.rx) * c.w AS x, c.y0 + (0.02 + 0.96 * s.ry) * c.h AS y) AS pt
"""


def load_incidents(db_url: str, n: int, reporter: str, seed: int) -> dict:
    """Load n incidents in one INSERT … SELECT; return timings (s)."""
    libpq = libpq_url(db_url)
    out = {}
    with psycopg.connect(libpq) as conn:
        conn.execute("SELECT setseed(%s)", (((seed % 1000) / 1000.0),))
        conn.execute("""CREATE TEMP TABLE bench_cell_pick AS
            SELECT (row_number() OVER (ORDER BY id) - 1)::int AS n, id, township_id, ST_XMin(geom) AS x0,
                   ST_YMin(geom) AS y0, ST_XMax(geom) - ST_XMin(geom) AS w, ST_YMax(geom) - ST_YMin(geom) AS h
            FROM grid_cells WHERE valid_to IS NULL""")
        cells = conn.execute("SELECT count(*) FROM bench_cell_pick").fetchone()[0]
        reporter_id = conn.execute("SELECT id FROM users WHERE username = %s", (reporter,)).fetchone()[0]
        category_id = conn.execute("SELECT id FROM categories WHERE kind = 'event' AND code = '06010' "
                                   "ORDER BY id LIMIT 1").fetchone()[0]
        conn.commit()
        started = time.perf_counter()
        base = conn.execute("UPDATE sync_counter SET seq = seq + %s WHERE id = 1 RETURNING seq - %s",
                            (n, n)).fetchone()[0]
        conn.execute(_LOAD_SQL, {"base": base, "category_id": category_id, "cells": cells, "n": n,
                                 "reporter_id": reporter_id})
        conn.commit()
        out["insert_s"] = time.perf_counter() - started
    with psycopg.connect(libpq, autocommit=True) as conn:
        started = time.perf_counter()
        conn.execute("VACUUM ANALYZE incidents")
        out["vacuum_s"] = time.perf_counter() - started
        # Write the load's dirty pages now: otherwise the checkpointer spreads them over the timed runs
        # (observed: a 155 s checkpoint during them doubled the raw SQL's p95). scripts/setup.sh grants it.
        try:
            conn.execute("CHECKPOINT")
            out["checkpoint"] = "done"
        except psycopg.errors.InsufficientPrivilege:
            out["checkpoint"] = "not allowed (GRANT pg_checkpoint TO the role: scripts/setup.sh does)"
        out["rows"], out["stamped"], out["size"] = conn.execute(
            "SELECT count(*), count(sync_seq), pg_size_pretty(pg_total_relation_size('incidents')) "
            "FROM incidents").fetchone()
    return out


class Getter:
    """GET over one keep-alive connection, timed until the body is read (gzip as the phone asks for it)."""

    def __init__(self, base_url: str, token: str):
        parts = urlsplit(base_url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        self.headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"}

    def ids(self, cursor: str | None) -> list:
        """The (entity, id, seq) of the page's changes and its has_more (to check two servers agree)."""
        query = {"limit": PAGE} if cursor is None else {"cursor": cursor, "limit": PAGE}
        self.conn.request("GET", "/api/v1/sync/changes?" + urlencode(query), headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        if response.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        page = json.loads(body)
        return [(c["entity"], c["id"], c.get("seq")) for c in page["changes"]] + [page["has_more"]]

    def __call__(self, cursor: str | None) -> tuple[float, int]:
        query = {"limit": PAGE} if cursor is None else {"cursor": cursor, "limit": PAGE}
        start = time.perf_counter_ns()
        self.conn.request("GET", "/api/v1/sync/changes?" + urlencode(query), headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        elapsed = (time.perf_counter_ns() - start) / 1e6
        if response.status != 200:
            raise RuntimeError(f"pull answered {response.status}: {body[:300]!r}")
        return elapsed, len(body)


def page_params(conn, username: str, cursor: str | None, token: str) -> dict:
    """The parameters sync.pull passes for this cursor (the scope's cells as sync.pull._CONTEXT_SQL gives them)."""
    state = {} if cursor is None else p.decode_cursor(cursor, SECRET_KEY.encode())
    seq = state.get("s", 0)
    uid, epoch = conn.execute("SELECT id, scope_epoch FROM users WHERE username = %s", (username,)).fetchone()
    codes = conn.execute("SELECT cell_codes FROM worker_scopes WHERE user_id = %s AND epoch = %s",
                         (uid, epoch)).fetchone()[0]
    cells = conn.execute("SELECT id, code FROM grid_cells WHERE code = ANY(%s) ORDER BY id", (codes,)).fetchall()
    token_id = conn.execute("SELECT id FROM api_tokens WHERE token_hash = %s", (digest(token),)).fetchone()[0]
    params = {"cell_ids": [c[0] for c in cells], "cell_codes": [c[1] for c in cells], "seq": seq, "uid": uid,
              "limit": PAGE + 1, "codes_literal": "{" + ",".join(sorted(codes)) + "}", "epoch": epoch,
              "token_id": token_id,
              "token_hash": digest(token)}
    return {**params, "until": final_window(conn, params, state.get("w"))}


def final_window(conn, params: dict, hint: int | None) -> int:
    """The sync_seq window's upper end at which sync.pull._incremental stops widening for this cursor
    (its own incidents_in_window, fed by psycopg, from the cursor's window hint)."""
    from sync.pull import _INCREMENTAL_SQL, first_window, incidents_in_window

    hw = conn.execute("SELECT seq FROM sync_counter WHERE id = 1").fetchone()[0]
    if hint is None:  # a first page: the app's guess from the scope's share of the cells
        county_cells = conn.execute("SELECT reltuples FROM pg_class WHERE oid = 'grid_cells'::regclass").fetchone()[0]
        hint = first_window(PAGE, len(params["cell_ids"]), county_cells)
    sql, tried = with_pyformat(_INCREMENTAL_SQL.text), []

    def fetch(until):
        tried.append(until)
        return conn.execute(sql, {**params, "until": until}).fetchall()
    incidents_in_window(fetch, params["seq"], PAGE, hw, hint)
    return tried[-1]


def raw_main(conn):
    """The page's main statements: the windowed id scan (at its final window), then the JSON of its first rows."""
    from sync.pull import _INCIDENT_CHANGES_SQL, _INCREMENTAL_SQL

    scan, build = with_pyformat(_INCREMENTAL_SQL.text), with_pyformat(_INCIDENT_CHANGES_SQL.text)
    cursor = conn.cursor()

    def call(params) -> float:
        start = time.perf_counter_ns()
        run_main(cursor, scan, build, params)
        return (time.perf_counter_ns() - start) / 1e6
    return call


def run_main(cursor, scan: str, build: str, params: dict) -> None:
    cursor.execute(scan, params, prepare=True)
    tids = [row[1] for row in cursor.fetchall()[:PAGE]]
    if tids:
        cursor.execute(build, {"tids": "{" + ",".join(f'"{t}"' for t in tids) + "}", "cell_ids": params["cell_ids"],
                               "cell_codes": params["cell_codes"]}, prepare=True)
        cursor.fetchall()


def raw_page(conn):
    """All the statements an incremental page runs (authentication, sync.pull.context, sync.pull.changes), in one
    REPEATABLE READ transaction."""
    from gridapp.services.auth import _PRINCIPAL_QUERY
    from sync.pull import _CONTEXT_SQL, _INCIDENT_CHANGES_SQL, _INCREMENTAL_SQL, _OTHER_CHANGES_SQL

    principal = str(_PRINCIPAL_QUERY.compile(dialect=postgresql.dialect(paramstyle="pyformat")))
    statements = [
        (principal, lambda q: {"token_hash": q["token_hash"]}),
        (with_pyformat(_CONTEXT_SQL.text), lambda q: {"token_id": q["token_id"]}),
        (with_pyformat(_OTHER_CHANGES_SQL.text), lambda q: {**q, "until": q["hw"], "codes": q["codes_literal"]}),
        ("UPDATE devices SET last_ack_seq = %(seq)s WHERE id = %(device)s AND last_ack_seq < %(seq)s", lambda q: q),
    ]
    scan, build = with_pyformat(_INCREMENTAL_SQL.text), with_pyformat(_INCIDENT_CHANGES_SQL.text)
    cursor = conn.cursor()
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # BEGIN ISOLATION LEVEL …, as the app's

    def call(params) -> float:
        start = time.perf_counter_ns()
        with conn.transaction():
            hw = None
            for sql, make in statements:
                cursor.execute(sql, make({**params, "hw": hw}), prepare=True)
                if cursor.description is not None:
                    rows = cursor.fetchall()
                    if hw is None and sql != principal:
                        hw = rows[0][-1]  # _CONTEXT_SQL's last column
            run_main(cursor, scan, build, params)
        return (time.perf_counter_ns() - start) / 1e6
    return call


def timed_rounds(calls: dict, samples: int, warmup: int) -> dict:
    """Run every call `warmup` times untimed, then `samples` rounds interleaving the calls; return ms lists."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    times = {name: [] for name in calls}
    for _ in range(samples):
        for name, call in calls.items():
            times[name].append(call())
    return times


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.sync_pull", description=__doc__.split("\n")[0])
    parser.add_argument("--incidents", type=int, default=1_000_000)
    parser.add_argument("--cells", type=int, default=10_000, help="grid cells (default 10,000)")
    parser.add_argument("--scope-cells", type=int, default=400, help="cells of the pulling worker (default 400)")
    parser.add_argument("--samples", type=int, default=200, help="timed requests per kind (default 200)")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--db-url", help="default $GRIDAPP_BENCH_SYNC_DB_URL or gridapp_bench_sync")
    parser.add_argument("--smoke", action="store_true", help="tiny scale (5,000 incidents, 800 cells) in seconds")
    parser.add_argument("--pythonpath", help=argparse.SUPPRESS)  # experiments: a patched wsgi module
    parser.add_argument("--app-spec", default="wsgi:app", help=argparse.SUPPRESS)
    parser.add_argument("--compare-app-spec", help=argparse.SUPPRESS)  # experiments: a second, patched server
    args = parser.parse_args(argv)
    if args.smoke:
        args.incidents, args.cells, args.samples, args.warmup = 5_000, 800, 4, 1
    if args.scope_cells > 400 or args.samples < 2:
        parser.error("--scope-cells at most 400 (one village), --samples at least 2")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    db_url = bench_db_url(args.db_url)
    header(f"gridapp sync pull benchmark: {args.incidents:,} incidents over {args.cells:,} cells, pulling worker "
           f"holds {args.scope_cells} cells, pages of {PAGE}, {args.samples} samples per kind, seed {args.seed}",
           db_url)
    app = bench_app(db_url)
    world = build_world(app, args.cells, 2, args.scope_cells)
    (heavy, heavy_cells), (reporter, _) = world["workers"]
    print(f"set-up (migrations + grid {world['grid'].cells:,} cells + catalogue + 2 workers): {world['load_s']:.1f} s")
    load = load_incidents(db_url, args.incidents, reporter, args.seed)
    print(f"load: {load['rows']:,} incidents (stamped {load['stamped']:,}) by one INSERT … SELECT in "
          f"{load['insert_s']:.1f} s = {load['rows'] / load['insert_s']:,.0f} rows/s; CHECKPOINT {load['checkpoint']}; "
          f"VACUUM ANALYZE "
          f"{load['vacuum_s']:.1f} s; incidents table + indexes {load['size']}")
    workdir = Path(tempfile.mkdtemp(prefix="bench_sync_pull_"))
    libpq = libpq_url(db_url)
    with ExitStack() as stack:
        workers = 1 if args.compare_app_spec else 2
        base = stack.enter_context(gunicorn(db_url, workers=workers, extra_pythonpath=args.pythonpath,
                                            app_spec=args.app_spec))
        conn = stack.enter_context(psycopg.connect(libpq, autocommit=True))
        print(f"server: gunicorn gthread {workers} worker(s) × 4 threads at {base} ({args.app_spec})")
        other = None
        if args.compare_app_spec:
            other = stack.enter_context(gunicorn(db_url, workers=1, extra_pythonpath=args.pythonpath,
                                                 app_spec=args.compare_app_spec))
            print(f"second server (same database, same cursors): gunicorn gthread 1 worker × 4 threads at {other} "
                  f"({args.compare_app_spec})")
        phone = make_phone(base, 0, heavy, heavy_cells, workdir)
        # Walk worker 1's whole stream once, keeping every page's cursor.
        cursors, walk_ms, changes = [None], [], 0
        started = time.perf_counter()
        for _ in range(100_000):
            page = phone.client._call("GET", "/api/v1/sync/changes", query={
                k: v for k, v in (("cursor", cursors[-1]), ("limit", PAGE)) if v is not None}).body
            walk_ms.append(phone.transport.requests[-1][3] * 1000)
            changes += len(page["changes"])
            cursors.append(page["next_cursor"])
            if not page["has_more"]:
                break
        walk_s = time.perf_counter() - started
        pages = len(walk_ms)
        print(f"full walk of worker 1's stream: {changes:,} changes in {pages} pages, {walk_s:.1f} s "
              f"({changes / walk_s:,.0f} changes/s through the reference client, incl. JSON parsing)")
        caught_up = cursors[-1]
        picks = {"first page (cursor 0)": None}
        for share in (0.25, 0.5, 0.75):
            index = max(1, min(pages - 1, round(pages * share)))
            picks[f"mid-stream page {index}/{pages}"] = cursors[index]
        # A few new changes in worker 1's cells, from another install of the same worker.
        writer = make_phone(base, 1, heavy, heavy_cells, workdir)
        make_reports(writer, 10, random.Random(args.seed), label="incremental")
        pushed = push(writer, 100)
        picks["incremental (10 new changes)"] = caught_up
        probe = phone.client._call("GET", "/api/v1/sync/changes", query={"cursor": caught_up, "limit": PAGE}).body
        picks["incremental (nothing new)"] = probe["next_cursor"]
        print(f"incremental: pushed {pushed}; the caught-up cursor now returns {len(probe['changes'])} changes")

        getter = Getter(base, phone.client._meta("access_token"))
        getter2 = Getter(other, phone.client._meta("access_token")) if other else None
        sizes = {name: getter(cursor)[1] for name, cursor in picks.items()}
        if getter2:
            same = all(getter.ids(cursor) == getter2.ids(cursor) for cursor in picks.values())
            print(f"check: the patched server's pages {'equal' if same else 'DIFFER FROM'} the app's for every cursor")
        params = {name: {**page_params(conn, heavy, cursor, phone.client._meta("access_token")),
                         "device": phone.client.device_id}
                  for name, cursor in picks.items()}
        main_call, page_call = raw_main(conn), raw_page(conn)
        calls = {}
        for name, cursor in picks.items():
            calls[(name, "app over HTTP")] = (lambda c=cursor: getter(c)[0])
            if getter2:
                calls[(name, "patched app over HTTP")] = (lambda c=cursor: getter2(c)[0])
            calls[(name, "raw main statements")] = (lambda q=params[name]: main_call(q))
            calls[(name, "raw all page statements")] = (lambda q=params[name]: page_call(q))
        times = timed_rounds(calls, args.samples, args.warmup)
        getter.conn.close()
        if getter2:
            getter2.conn.close()
        for client in (phone.client, writer.client):
            client.db.close()
    print(f"contention after the timed runs: {contention()}")

    print(f"\n{'page':<34} {'variant':<26} {'n':>5} {'p50':>8} {'p95':>8} {'p99':>8}  (ms)   body")
    stats = {key: summarize(values) for key, values in times.items()}
    for (name, variant), s in stats.items():
        body = f"{sizes[name] / 1024:,.0f} KiB gz" if variant == "app over HTTP" else ""
        print(f"{name:<34} {variant:<26} {s.n:>5} {s.p50:>8.2f} {s.p95:>8.2f} {s.p99:>8.2f}   {body}")
    print(f"\n{'ratio app / raw':<34} {'baseline':<26} {'p50':>8} {'p95':>8}")
    for name in picks:
        app_s = stats[(name, "app over HTTP")]
        for raw in ("raw main statements", "raw all page statements"):
            base_s = stats[(name, raw)]
            if (name, "patched app over HTTP") in stats:
                patched = stats[(name, "patched app over HTTP")]
                print(f"{name:<34} {'patched / ' + raw:<26} {patched.p50 / base_s.p50:>7.2f}× "
                      f"{patched.p95 / base_s.p95:>7.2f}×")
            print(f"{name:<34} {raw:<26} {app_s.p50 / base_s.p50:>7.2f}× {app_s.p95 / base_s.p95:>7.2f}×")
    print(f"\ntargets (p95 of GET /api/v1/sync/changes?limit={PAGE} < {TARGET_P95_MS:.0f} ms, "
          f"{load['rows']:,} incidents in the database):")
    for name in picks:
        p95 = stats[(name, "app over HTTP")].p95
        print(f"  {name:<34} p95 {p95:8.2f} ms: {verdict(p95 < TARGET_P95_MS)}")
        if (name, "patched app over HTTP") in stats:
            p95 = stats[(name, "patched app over HTTP")].p95
            print(f"  {name + ' (patched)':<34} p95 {p95:8.2f} ms: {verdict(p95 < TARGET_P95_MS)}")
    print(f"database {make_url(db_url).database}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
