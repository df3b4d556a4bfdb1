"""Locate and bbox-page latency over a township-scale grid: the app versus the same SQL run raw.

Run from the project root (the database must exist with PostGIS: `scripts/setup.sh gridapp_bench`):

    .venv/bin/python -m bench.grid_queries [--cells 100000] [--samples 2000] [--warmup 200] [--rounds 8]
                                           [--smoke] [--profile]

GRIDAPP_SQLALCHEMY_DATABASE_URI picks the database (default gridapp_bench on 127.0.0.1). Its name must
end in `_bench` or `_test`: the script drops every table except spatial_ref_sys and rebuilds the schema
with the migrations, as tests/conftest.py does.

Data. N (default 100,000) axis-aligned ~100 m × 100 m cells in EPSG:4326 from 120.0 E, 30.4 N, in county
330521; a village is a 20 × 20 block of cells (codes village + 001..400), 25 villages per township.
The cells come from one INSERT … SELECT over generate_series, then ANALYZE. One dispatcher scoped to
the county signs in with a bearer token.

Queries, with the same seeded random inputs for every variant (separate inputs for the warm-up):
- locate: a point drawn uniformly inside the grid → GET /api/v1/grids/locate?lon=..&lat=.. (one cell);
- bbox: a ~2 km × 2 km box drawn uniformly inside the grid → GET /api/v1/grids/cells?bbox=..&limit=500
  (one GeoJSON page of ≈ 400-440 cells).

Variants, each warmed up, then timed request by request. The samples are split into rounds, and each
round goes through every variant in turn, so load from elsewhere on the machine hits all of them alike:
- app in-process: Flask test client, timed around `client.get(...)` and reading the body. That is all
  the server does (pool check-out and ping, token lookup, argument parsing, the query, serialisation,
  the COMMIT or ROLLBACK at teardown) except the network and the WSGI server, plus the test client's
  own cost;
- app over HTTP: gunicorn (gthread worker class so keep-alive works, 1 worker, 1 thread) and one
  keep-alive http.client connection;
- app server-side, in-process and gunicorn: the same requests as the two variants above, timed by the
  app itself (its `Server-Timing: app;dur=` header, gridapp/server_timing.py): from the WSGI call to the
  app's return, teardown included; without the test client, the WSGI server and the network;
- raw SQL via psql: the app's own SQL text (imported from gridapp.services.grids, so it cannot drift)
  with literal values, in ONE psql session with \\timing on. "prepared" is PREPARE once + EXECUTE per
  input (what the app gets: psycopg prepares a statement on its 5th use on a connection, and keeps
  it because read requests end with COMMIT, gridapp/transactions.py); "plain"
  sends the literal statement, parsed and planned each time. psql's "Time:" is the client round
  trip per statement;
- raw SQL via psycopg 3: one autocommit connection, the same text with parameters, prepare=True,
  timed around execute + fetchall.

--smoke runs it all at a tiny scale (2,000 cells, 20 samples, 5 warm-up, 2 rounds) in about ten seconds.

Printed: the machine and how loaded it is, p50/p95/p99/mean per variant, the ratios app/raw for p50
and p95 (in-process and server-side), whether the targets hold (locate p95 < 2 ms server-side, the
gunicorn Server-Timing being the headline; app ≤ 1.5 × raw SQL), and where an in-process locate request
spends its time. Nothing is asserted: this is a measurement, not a test.
"""
import argparse
import hashlib
import http.client
import logging
import math
import os
import platform
import pty
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import psycopg
from psycopg.rows import dict_row
from sqlalchemy import text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB_URL = "postgresql+psycopg://gridapp:gridapp@127.0.0.1:5432/gridapp_bench"
REDIS_URL = "redis://127.0.0.1:6379/14"
SECRET_KEY = "bench-secret"
USERNAME, PASSWORD = "bench_dispatcher", "bench-pass-123"
COUNTY = "330521"

# ~100 m × 100 m at 30.3° N, the cell of PERF.md §a.
DX, DY = 0.0010394, 0.0009021
WEST, NORTH = 120.0, 30.4
BLOCK = 20  # a village is BLOCK × BLOCK cells: sequences 001..400, under the 999 a code allows
VILLAGES_PER_TOWNSHIP = 25
BOX_M = 2000  # side of a bbox query, metres
PAGE_LIMIT = 500

TARGET_P95_MS = 2.0
TARGET_RATIO = 1.5


@dataclass(frozen=True)
class Scale:
    cells: int
    samples: int
    warmup: int


SMOKE = Scale(cells=2_000, samples=20, warmup=5)


@dataclass(frozen=True)
class Grid:
    """A cols-wide block of `cells` cells filled row by row from (WEST, NORTH); the last row may be short."""

    cells: int
    cols: int

    @property
    def rows(self) -> int:
        return math.ceil(self.cells / self.cols)

    @property
    def blocks_across(self) -> int:
        return math.ceil(self.cols / BLOCK)

    @property
    def villages(self) -> int:
        return self.blocks_across * math.ceil(self.rows / BLOCK)

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """west, south, east, north of the full rows: every point inside lies in a cell."""
        full_rows = self.cells // self.cols
        return WEST, NORTH - full_rows * DY, WEST + self.cols * DX, NORTH


def grid_for(cells: int) -> Grid:
    # About 1.6 : 1 like a real township (41 × 25 km); exactly 400 × 250 for 100,000 cells.
    return Grid(cells, max(BLOCK, round(math.sqrt(cells * 1.6))))


# --- set-up ---------------------------------------------------------------------------------------

def check_bench_database(db_url: str) -> None:
    name = make_url(db_url).database or ""
    if not name.endswith(("_bench", "_test")):
        sys.exit(f"bench: refusing to wipe database {name!r}; its name must end in _bench or _test.")


def make_app(db_url: str):
    from gridapp import create_app

    app = create_app({
        "SECRET_KEY": SECRET_KEY,
        "SQLALCHEMY_DATABASE_URI": db_url,
        "REDIS_URL": REDIS_URL,
        "ARGON2_TIME_COST": 1,  # one user: cheap hashing only saves set-up time
        "ARGON2_MEMORY_KIB": 1024,
    })
    # The floor of any request: an empty view through the same test client and Flask dispatch.
    # Registered on this app object only, before its first request; the app's code is untouched.
    app.add_url_rule("/bench/noop", "bench_noop", lambda: "")
    return app


# Our objects in the public schema that are not part of an extension (PostGIS's stay).
_NOT_FROM_EXTENSION = "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = {oid} AND d.deptype = 'e')"
_OUR_FUNCTIONS = text(f"""
SELECT p.oid::regprocedure::text FROM pg_proc p
WHERE p.pronamespace = 'public'::regnamespace AND {_NOT_FROM_EXTENSION.format(oid="p.oid")}""")
_OUR_TYPES = text(f"""
SELECT format('%I', t.typname) FROM pg_type t
WHERE t.typnamespace = 'public'::regnamespace AND t.typtype IN ('e', 'd')
  AND {_NOT_FROM_EXTENSION.format(oid="t.oid")}""")


def reset_schema() -> None:
    """Drop our tables, functions and types (PostGIS stays) and build the schema with the migrations."""
    from flask_migrate import upgrade

    from gridapp.extensions import db

    names = db.session.execute(text(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'spatial_ref_sys'"
    )).scalars().all()
    if names:
        db.session.execute(text("DROP TABLE " + ", ".join(f'"{n}"' for n in names) + " CASCADE"))
    for function in db.session.execute(_OUR_FUNCTIONS).scalars().all():
        db.session.execute(text(f"DROP FUNCTION {function} CASCADE"))
    for type_ in db.session.execute(_OUR_TYPES).scalars().all():
        db.session.execute(text(f"DROP TYPE {type_} CASCADE"))
    db.session.commit()
    # alembic's env.py re-configures logging from its ini file; silence its INFO lines for the report.
    logging.disable(logging.INFO)
    try:
        upgrade()
    finally:
        logging.disable(logging.NOTSET)


# One statement makes every cell: row-major over the grid; block (village) and sequence inside the
# block (west to east, then north to south) follow from the column and row.
_INSERT_CELLS = text("""
INSERT INTO grid_cells (code, name, village_id, township_id, geom, area_m2, valid_from)
SELECT v.code || lpad(s.seq::text, 3, '0'), '网格' || lpad(s.seq::text, 3, '0'), v.village_id, v.township_id,
       s.geom, ST_Area(s.geom::geography), now()
FROM (
    SELECT (r / :block) * :blocks_across + c / :block AS block,
           (r % :block) * :block + c % :block + 1 AS seq,
           ST_ForcePolygonCCW(ST_MakeEnvelope(:west + c * :dx, :north - (r + 1) * :dy,
                                              :west + (c + 1) * :dx, :north - r * :dy, 4326)) AS geom
    FROM generate_series(0, :cells - 1) AS i, LATERAL (SELECT i % :cols AS c, i / :cols AS r) AS rc
) AS s
JOIN unnest(CAST(:codes AS text[]), CAST(:village_ids AS int[]), CAST(:township_ids AS int[]))
     WITH ORDINALITY AS v(code, village_id, township_id, n) ON v.n - 1 = s.block
""")


def load_grid(grid: Grid) -> dict:
    """Create the county, townships, villages and cells, then a dispatcher; return its auth headers."""
    from gridapp.extensions import db
    from gridapp.services.areas import ensure_area
    from gridapp.services.auth import issue_token
    from gridapp.services.grids import rebuild_cell_index
    from gridapp.services.users import create_user

    county = ensure_area(COUNTY, "基准县", "county")
    townships, villages = {}, []
    for block in range(grid.villages):
        t, v = divmod(block, VILLAGES_PER_TOWNSHIP)
        if t not in townships:
            townships[t] = ensure_area(f"{COUNTY}{101 + t:03d}", f"基准{t + 1}镇", "township", county)
        villages.append(ensure_area(f"{townships[t].code}{v + 1:03d}", f"{t + 1}镇{v + 1}村", "village", townships[t]))
    db.session.execute(_INSERT_CELLS, {
        "block": BLOCK, "blocks_across": grid.blocks_across, "cols": grid.cols, "cells": grid.cells,
        "west": WEST, "north": NORTH, "dx": DX, "dy": DY,
        "codes": [v.code for v in villages], "village_ids": [v.id for v in villages],
        "township_ids": [v.parent_id for v in villages],
    })
    rebuild_cell_index()  # as gridapp.services.grids.import_cells does after inserting cells
    create_user(USERNAME, "dispatcher", county, PASSWORD)
    token, _ = issue_token(USERNAME, PASSWORD, 24 * 3600)
    db.session.commit()
    # Fresh statistics, as a long-running database would have; ANALYZE needs the rows committed.
    db.session.execute(text("ANALYZE"))
    db.session.commit()
    return {"Authorization": f"Bearer {token}"}


def set_up(app, grid: Grid) -> dict:
    from gridapp.extensions import db

    # The set-up app context ends here: a request that finds an app context already pushed reuses
    # it (and its session), which would skip the per-request session and pool round trips.
    with app.app_context():
        reset_schema()
        headers = load_grid(grid)
        db.session.remove()
    return headers


# --- inputs ---------------------------------------------------------------------------------------

def random_points(grid: Grid, count: int, rng: random.Random) -> list[tuple[float, float]]:
    west, south, east, north = grid.extent
    return [(rng.uniform(west, east), rng.uniform(south, north)) for _ in range(count)]


def random_boxes(grid: Grid, count: int, rng: random.Random) -> list[tuple[float, float, float, float]]:
    west, south, east, north = grid.extent
    width = min(BOX_M / (111_320 * math.cos(math.radians((south + north) / 2))), east - west)
    height = min(BOX_M / 110_574, north - south)
    boxes = []
    for _ in range(count):
        x, y = rng.uniform(west, east - width), rng.uniform(south, north - height)
        boxes.append((x, y, x + width, y + height))
    return boxes


# The parameters the app itself passes (gridapp.services.grids.locate / cells_page) for these inputs.
def locate_params(point) -> dict:
    return {"prefix": COUNTY, "lon": point[0], "lat": point[1]}


def page_params(box) -> dict:
    min_lon, min_lat, max_lon, max_lat = box
    return {"prefix": COUNTY, "after": None, "limit": PAGE_LIMIT + 1,
            "min_lon": min_lon, "min_lat": min_lat, "max_lon": max_lon, "max_lat": max_lat}


# repr() keeps every float exact, so the app parses the very value the raw SQL gets.
def locate_path(point) -> str:
    return "/api/v1/grids/locate?" + urlencode({"lon": repr(point[0]), "lat": repr(point[1])})


def page_path(box) -> str:
    return "/api/v1/grids/cells?" + urlencode({"bbox": ",".join(map(repr, box)), "limit": PAGE_LIMIT}, safe=",")


# --- SQL text: the app's text() statements rewritten for psql and psycopg --------------------------

# SQLAlchemy text()'s own bind syntax: ":name", not "::type" and not "HH24:MI" inside to_char.
_BIND = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")


def sql_literal(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def with_literals(sql: str, params: dict) -> str:
    return _BIND.sub(lambda m: sql_literal(params[m.group(1)]), sql)


def with_positional(sql: str) -> tuple[str, list[str]]:
    """Rewrite :name binds as $1, $2... (by first appearance) for PREPARE; return the names in order."""
    names: list[str] = []

    def number(match):
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return _BIND.sub(number, sql), names


def with_pyformat(sql: str) -> str:
    return _BIND.sub(lambda m: f"%({m.group(1)})s", sql.replace("%", "%%"))


def libpq_url(db_url: str) -> str:
    return make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)


# --- timing ---------------------------------------------------------------------------------------

def timed(call, warmup_inputs, inputs) -> list[float]:
    """Run `call` on the warm-up inputs untimed, then on each input timed; return milliseconds."""
    for item in warmup_inputs:
        call(item)
    times = []
    for item in inputs:
        start = time.perf_counter_ns()
        call(item)
        times.append((time.perf_counter_ns() - start) / 1e6)
    return times


@dataclass
class Stats:
    n: int
    p50: float
    p95: float
    p99: float
    mean: float


def summarize(times: list[float]) -> Stats:
    cuts = statistics.quantiles(times, n=100, method="inclusive")
    return Stats(len(times), cuts[49], cuts[94], cuts[98], statistics.fmean(times))


# --- variants: each times one batch of inputs for one query -------------------------------------

QUERIES = ("locate", "bbox")
PATHS = {"locate": locate_path, "bbox": page_path}
PARAMS = {"locate": locate_params, "bbox": page_params}

APP = "app in-process (Flask test client)"
HTTP = "app over HTTP (gunicorn gthread, keep-alive)"
# The app's own time per request, from its Server-Timing header (gridapp/server_timing.py).
APP_SERVER = "app server-side (Server-Timing), in-process"
HTTP_SERVER = "app server-side (Server-Timing), gunicorn"
PSQL_PREPARED = "raw SQL, psql PREPARE/EXECUTE"
PSQL_PLAIN = "raw SQL, psql plain statement"
PSYCOPG = "raw SQL, psycopg 3 prepare=True"
VARIANTS = (APP, APP_SERVER, HTTP, HTTP_SERVER, PSQL_PREPARED, PSQL_PLAIN, PSYCOPG)
RAW = (PSQL_PREPARED, PSQL_PLAIN, PSYCOPG)
_SERVER_TIMING = re.compile(r"\bapp;dur=([\d.]+)")


def server_ms(header: str | None) -> float:
    """The app's time in a `Server-Timing: app;dur=<ms>` header."""
    match = _SERVER_TIMING.search(header or "")
    if match is None:
        raise RuntimeError(f"no app;dur in the Server-Timing header {header!r} (is SERVER_TIMING off?)")
    return float(match.group(1))


def test_client_call(client, headers):
    """GET a path in-process; return the app's Server-Timing milliseconds."""
    def call(path):
        response = client.get(path, headers=headers)
        response.get_data()
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}: {response.get_data(as_text=True)[:300]}")
        return server_ms(response.headers.get("Server-Timing"))
    return call


def http_call(conn: http.client.HTTPConnection, headers):
    """GET a path over the keep-alive connection; return the app's Server-Timing milliseconds."""
    def call(path):
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"{path} answered {response.status}: {body[:300]!r}")
        return server_ms(response.getheader("Server-Timing"))
    return call


def app_variant(label: str, server_label: str, call):
    """A variant that requests the app's URL for each input (test client or HTTP): the client's time
    around each request under `label`, the app's own (Server-Timing) under `server_label`."""
    def run(query, items):
        server = []
        times = timed(lambda path: server.append(call(path)), [], [PATHS[query](item) for item in items])
        return {label: times, server_label: server}
    return run


def psycopg_variant(conn: psycopg.Connection, sqls: dict):
    cursor = conn.cursor()
    statements = {query: with_pyformat(sql) for query, sql in sqls.items()}

    def run(query, items):
        def call(params):
            cursor.execute(statements[query], params, prepare=True)
            cursor.fetchall()
        return {PSYCOPG: timed(call, [], [PARAMS[query](item) for item in items])}
    return run


class PsqlSession:
    """ONE psql process for the whole run, fed batch after batch.

    A batch goes in as a file (`\\i`), so writing to psql's stdin never blocks; psql's stdout is a
    pseudo-terminal, so psql line-buffers it and a batch's "Time:" lines can be read back before the
    next variant runs. The rows themselves go to /dev/null (-o).
    """

    def __init__(self, libpq: str):
        primary, secondary = pty.openpty()
        self._stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            ["psql", "-X", "-q", "-A", "-t", "-P", "pager=off", "-o", "/dev/null", "-v", "ON_ERROR_STOP=1",
             "-d", libpq, "-f", "-"],
            stdin=subprocess.PIPE, stdout=secondary, stderr=self._stderr)
        os.close(secondary)
        self._out = os.fdopen(primary, "rb", buffering=0)
        self._pending = b""
        self._batches = 0

    def run(self, lines: list[str]) -> list[str]:
        """Run script lines; return what psql printed for them."""
        self._batches += 1
        marker = f"@@ end of batch {self._batches}"
        with tempfile.NamedTemporaryFile("w", suffix=".sql", prefix="bench_") as script:
            script.write("\n".join(lines) + "\n")
            script.flush()
            self.proc.stdin.write(f"\\i {script.name}\n\\echo {marker}\n".encode())
            self.proc.stdin.flush()
            printed = []
            while (line := self._readline()) != marker:
                printed.append(line)
            return printed

    def _readline(self) -> str:
        while b"\n" not in self._pending:
            try:
                chunk = self._out.read(65536)
            except OSError:  # EIO: psql has exited
                chunk = b""
            if not chunk:
                self._stderr.seek(0)
                raise RuntimeError(f"psql stopped: {self._stderr.read().decode()[-2000:]}")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode().rstrip("\r")  # the terminal turns \n into \r\n

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        self._stderr.close()


def psql_variant(session: PsqlSession, sqls: dict):
    """Each batch runs every input as EXECUTE of a statement prepared once, then as the plain statement."""
    names = {}
    for query, sql in sqls.items():
        prepared_sql, names[query] = with_positional(sql)
        session.run([f"PREPARE bench_{query} AS {prepared_sql};"])
    session.run(["\\timing on"])

    def execute(query, params):
        return f"EXECUTE bench_{query}({', '.join(sql_literal(params[n]) for n in names[query])});"

    def plain(query, params):
        return with_literals(sqls[query], params).strip() + ";"

    def run(query, items):
        params = [PARAMS[query](item) for item in items]
        lines = ["\\echo @@ prepared", *(execute(query, p) for p in params),
                 "\\echo @@ plain", *(plain(query, p) for p in params)]
        times = parse_psql_timing(session.run(lines))
        return {PSQL_PREPARED: times["prepared"], PSQL_PLAIN: times["plain"]}
    return run


def parse_psql_timing(printed: list[str]) -> dict[str, list[float]]:
    """Collect the "Time: x ms" lines under each "@@ section" line."""
    times, section = defaultdict(list), None
    for line in printed:
        if line.startswith("@@ "):
            section = line[3:].strip()
        elif match := re.match(r"Time: ([\d.]+) ms", line):
            times[section].append(float(match.group(1)))
    return times


def measure(variants, warm: dict, inputs: dict, rounds: int) -> dict[tuple[str, str], list[float]]:
    """Warm every variant up, then time the inputs in `rounds` slices, each slice going through every
    variant in turn: load from elsewhere on the machine then hits all variants alike, not just one."""
    for run in variants:
        for query in QUERIES:
            run(query, warm[query])
    times = defaultdict(list)
    for r in range(rounds):
        for query in QUERIES:
            n = len(inputs[query])
            batch = inputs[query][r * n // rounds:(r + 1) * n // rounds]
            for run in variants:
                for label, batch_times in run(query, batch).items():
                    times[(query, label)] += batch_times
    return times


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def gunicorn(db_url: str, headers: dict, probe_path: str):
    """Run gunicorn on wsgi:app (1 worker, 1 thread) and yield its port; always stop it."""
    port = free_port()
    env = {**os.environ, "GRIDAPP_SECRET_KEY": SECRET_KEY, "GRIDAPP_SQLALCHEMY_DATABASE_URI": db_url,
           "GRIDAPP_REDIS_URL": REDIS_URL}
    # gthread rather than the sync worker (which `--threads 1` alone gives): the sync worker closes
    # the connection after every response, so keep-alive (and production's worker class) needs gthread.
    cmd = [str(Path(sys.executable).parent / "gunicorn"), "--bind", f"127.0.0.1:{port}",
           "--worker-class", "gthread", "--workers", "1", "--threads", "1", "--keep-alive", "60", "wsgi:app"]
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(proc, port, headers, probe_path, log)
        yield port
    finally:
        proc.terminate()  # graceful: the master stops its worker (quick SIGINT shutdown can orphan it)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def wait_until_serving(proc, port, headers, path, log, timeout=30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{log.read().decode()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path, headers=headers)
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("gunicorn did not answer within 30 s")


# --- checks and the time split --------------------------------------------------------------------

def check_same_answers(client, headers, conn, points, boxes) -> str:
    """The app and the raw SQL must answer the same, or the comparison means nothing."""
    from gridapp.services.grids import _LOCATE_SQL, _PAGE_SQL

    by_name = conn.cursor(row_factory=dict_row)
    for point in points:
        app_code = client.get(locate_path(point), headers=headers).get_json()["code"]
        raw_code = by_name.execute(with_pyformat(_LOCATE_SQL.text), locate_params(point)).fetchone()["code"]
        if app_code != raw_code:
            raise RuntimeError(f"locate {point}: app says {app_code}, SQL says {raw_code}")
    sizes = []
    for box in boxes:
        app_count = client.get(page_path(box), headers=headers).get_json()["numberReturned"]
        raw_count = min(len(conn.execute(with_pyformat(_PAGE_SQL.text), page_params(box)).fetchall()), PAGE_LIMIT)
        if app_count != raw_count:
            raise RuntimeError(f"bbox {box}: app returns {app_count} cells, SQL {raw_count}")
        sizes.append(app_count)
    return (f"{len(points)} locates and {len(boxes)} bbox pages agree between app and raw SQL "
            f"(pages of {min(sizes)}-{max(sizes)} cells)")


class Split:
    """Wrap functions in place to add up the time spent inside them (undone on exit)."""

    def __init__(self):
        self.ms = defaultdict(float)
        self.calls = defaultdict(int)
        self._undo = []

    def wrap(self, owner, attr: str, label):
        original = getattr(owner, attr)

        def wrapper(*args, **kwargs):
            start = time.perf_counter_ns()
            try:
                return original(*args, **kwargs)
            finally:
                name = label(*args) if callable(label) else label
                self.ms[name] += (time.perf_counter_ns() - start) / 1e6
                self.calls[name] += 1

        self._undo.append((owner, attr, original, attr in vars(owner)))
        setattr(owner, attr, wrapper)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for owner, attr, original, had_own in reversed(self._undo):
            if had_own:
                setattr(owner, attr, original)
            else:
                delattr(owner, attr)


# Labels of the time split; CHILDREN run inside their parent (the pool check-out and its ping happen
# at the request's first query, which is the token lookup).
AUTH, PING, AUTH_SQL = "token → principal (principal_for_token)", "pool check-out pre-ping (an empty query)", \
    "SQL execute: BEGIN + token/user/area query"
PARSE = "argument parsing (webargs + LocateArgs)"
LOCATE, LOCATE_SQL = "grids.locate (service)", "SQL execute: locate query"
DUMP, JSONIFY = "response: LocateResultSchema.dump", "response: jsonify"
END, COMMIT = "end of a read request (transactions.commit_if_unchanged)", "COMMIT"
ROLLBACK = "ROLLBACK at teardown (session.remove)"
PYTHON = "Python (session, pool check-out, SQLAlchemy/ORM, service code)"
TOP_LEVEL = [AUTH, PARSE, LOCATE, DUMP, JSONIFY, END, ROLLBACK]
CHILDREN = {AUTH: [PING, AUTH_SQL], LOCATE: [LOCATE_SQL], END: [COMMIT]}


def locate_split(app, client, headers, points) -> list[tuple[str, float | None]]:
    """Where one in-process locate request spends its time: (label, mean ms per request) rows.

    The app's functions are wrapped in place for this run only (and restored), so the numbers carry
    a little wrapper overhead; a function renamed in the app shows as n/a instead of failing.
    """
    import flask_smorest.response
    from flask_smorest.arguments import ArgumentsMixin

    import gridapp.api.security
    import gridapp.schemas.grids
    import gridapp.services.grids
    import gridapp.transactions
    from gridapp.extensions import db

    with app.app_context():
        dialect = db.engine.dialect
    call = test_client_call(client, headers)
    paths = [locate_path(p) for p in points]
    floor = timed(lambda _: client.get("/bench/noop").get_data(), ["-"] * 50, ["-"] * len(paths))
    for path in paths[:50]:  # warm again, outside the wrappers, which then count timed requests only
        call(path)

    def sql_label(cursor, statement, *rest):
        return LOCATE_SQL if "grid_locate" in statement else AUTH_SQL

    probes = [
        (gridapp.api.security, "principal_for_token", AUTH), (dialect, "do_ping", PING),
        (dialect, "do_execute", sql_label), (ArgumentsMixin.ARGUMENTS_PARSER, "parse", PARSE),
        (gridapp.services.grids, "locate", LOCATE),
        (getattr(gridapp.schemas.grids, "LocateResultSchema", None), "dump", DUMP),
        (flask_smorest.response, "jsonify", JSONIFY), (gridapp.transactions, "commit_if_unchanged", END),
        (dialect, "do_commit", COMMIT), (dialect, "do_rollback", ROLLBACK),
    ]
    with Split() as split:
        for owner, attr, label in probes:
            if owner is not None and hasattr(owner, attr):
                split.wrap(owner, attr, label)
        total = sum(timed(call, [], paths))
    n = len(paths)

    def mean(label):
        return split.ms[label] / n if split.calls[label] else None

    rows = []
    for label in TOP_LEVEL:
        rows.append((label, mean(label)))
        children = CHILDREN.get(label, [])
        for child in children:
            rows.append(("  of which " + child, mean(child)))
        if children and mean(label) is not None:
            inner = sum(mean(child) or 0 for child in children)
            rows.append((f"  of which {PYTHON}", mean(label) - inner))
    accounted = sum(mean(label) or 0 for label in TOP_LEVEL)
    rows += [("rest: Flask/Werkzeug/smorest dispatch, session set-up, test client", total / n - accounted),
             ("  for scale: an empty view through the same test client", statistics.fmean(floor)),
             ("total per request (mean, instrumented)", total / n)]
    return rows


def profile_locate(client, headers, points, top: int = 45) -> None:
    import cProfile
    import pstats

    call = test_client_call(client, headers)
    paths = [locate_path(p) for p in points]
    profiler = cProfile.Profile()
    profiler.enable()
    for path in paths:
        call(path)
    profiler.disable()
    print(f"\ncProfile of {len(paths)} in-process locate requests (top {top} by cumulative time):")
    pstats.Stats(profiler, stream=sys.stdout).strip_dirs().sort_stats("cumulative").print_stats(top)


# --- report ---------------------------------------------------------------------------------------

def machine_line(conn: psycopg.Connection) -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor() or "?")
    pg = conn.execute("SHOW server_version").fetchone()[0]
    postgis, geos = conn.execute("SELECT postgis_lib_version(), postgis_geos_version()").fetchone()
    return (f"machine: nproc {len(os.sched_getaffinity(0))} ({cpu}); PostgreSQL {pg}; PostGIS {postgis} "
            f"(GEOS {geos}); Python {platform.python_version()}; psql {psql_version()}")


def contention() -> str:
    """Load average and Linux CPU pressure: anything else running on the machine inflates every number."""
    line = f"load (1 min) {os.getloadavg()[0]:.2f}"
    try:
        pressure = re.search(r"avg60=([\d.]+)", Path("/proc/pressure/cpu").read_text()).group(1)
        line += f", CPU pressure {pressure}% (some, avg60)"
    except (OSError, AttributeError):
        pass
    return line


def sql_fingerprint(sql: str) -> str:
    return hashlib.sha1(sql.encode()).hexdigest()[:10]


def psql_version() -> str:
    printed = subprocess.run(["psql", "--version"], capture_output=True, text=True).stdout
    return match.group(0) if (match := re.search(r"\d+\.\d+", printed)) else "?"


def print_table(results: dict[tuple[str, str], Stats]) -> None:
    print(f"\n{'query':<7} {'variant':<44} {'n':>5} {'p50':>8} {'p95':>8} {'p99':>8} {'mean':>8}   (ms)")
    for (query, variant), s in results.items():
        print(f"{query:<7} {variant:<44} {s.n:>5} {s.p50:>8.3f} {s.p95:>8.3f} {s.p99:>8.3f} {s.mean:>8.3f}")


def print_ratios(results) -> None:
    for app_label in (APP, HTTP_SERVER):
        print(f"\n{'ratio':<7} {app_label + ' / raw':<60} {'p50':>8} {'p95':>8}")
        for query in QUERIES:
            app = results[(query, app_label)]
            for raw in RAW:
                base = results[(query, raw)]
                print(f"{query:<7} {'/ ' + raw:<60} {app.p50 / base.p50:>7.2f}× {app.p95 / base.p95:>7.2f}×")
    print()
    for query in QUERIES:
        over, app = results[(query, HTTP)], results[(query, APP)]
        print(f"{query:<7} {'HTTP / in-process':<60} {over.p50 / app.p50:>7.2f}× {over.p95 / app.p95:>7.2f}×")


def print_targets(results) -> None:
    def verdict(ok):
        return "MET" if ok else "MISSED"

    print("\ntargets (the issue: locate p95 under 2 ms server-side, within 1.5× of raw SQL):")
    for label in (HTTP_SERVER, APP_SERVER, APP):
        app = results[("locate", label)]
        print(f"  locate p95 {label} {app.p95:.3f} ms < {TARGET_P95_MS} ms: {verdict(app.p95 < TARGET_P95_MS)}")
    for query in QUERIES:
        for label in (HTTP_SERVER, APP):
            app = results[(query, label)]
            for raw in (PSQL_PREPARED, PSYCOPG):
                ratio = app.p95 / results[(query, raw)].p95
                print(f"  {query} p95 {label} / {raw}: {ratio:.2f}× ≤ {TARGET_RATIO}×: "
                      f"{verdict(ratio <= TARGET_RATIO)}")
    for label in (HTTP_SERVER, APP):
        gap = results[("locate", label)].p50 - results[("locate", PSYCOPG)].p50
        print(f"  fixed app overhead per locate request (p50 {label} − p50 psycopg): {gap:.3f} ms")


def print_split(rows) -> None:
    print("\nwhere an in-process locate request spends its time (mean ms per request, instrumented run):")
    for label, ms in rows:
        print(f"  {label:<76} {'n/a' if ms is None else f'{ms:7.3f}':>7}")


# --- main -----------------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.grid_queries", description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=100_000, help="grid cells to load (default 100,000)")
    parser.add_argument("--samples", type=int, default=2000, help="timed requests per variant (default 2,000)")
    parser.add_argument("--warmup", type=int, default=200, help="untimed requests per variant first (default 200)")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved rounds the samples are split into")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--smoke", action="store_true", help="tiny scale (2,000 cells, 50 samples) in seconds")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of in-process locate")
    args = parser.parse_args(argv)
    args.scale = SMOKE if args.smoke else Scale(args.cells, args.samples, args.warmup)
    if args.smoke:
        args.rounds = 2
    if args.scale.cells < 2 * BLOCK * BLOCK or args.scale.samples < 2 * args.rounds or args.rounds < 1:
        parser.error(f"--cells must be at least {2 * BLOCK * BLOCK} and --samples at least 2 per round")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    scale = args.scale
    db_url = os.environ.get("GRIDAPP_SQLALCHEMY_DATABASE_URI", DEFAULT_DB_URL)
    check_bench_database(db_url)
    grid = grid_for(scale.cells)
    libpq = libpq_url(db_url)

    from gridapp.services.grids import _LOCATE_SQL, _PAGE_SQL

    sqls = {"locate": _LOCATE_SQL.text, "bbox": _PAGE_SQL.text}
    load_at_start = contention()
    app = make_app(db_url)
    started = time.perf_counter()
    headers = set_up(app, grid)
    load_s = time.perf_counter() - started

    # Separate warm-up inputs, so the timed inputs are new to every variant alike.
    rng = random.Random(args.seed)
    warm = {"locate": random_points(grid, scale.warmup, rng), "bbox": random_boxes(grid, scale.warmup, rng)}
    inputs = {"locate": random_points(grid, scale.samples, rng), "bbox": random_boxes(grid, scale.samples, rng)}

    print(f"== gridapp grid-query benchmark: {scale.cells:,} cells ({grid.cols} × {grid.rows}, {grid.villages} "
          f"villages); per variant {scale.samples:,} timed requests in {args.rounds} interleaved rounds after "
          f"{scale.warmup:,} warm-up; seed {args.seed}")
    client = app.test_client()
    psql = PsqlSession(libpq)
    try:
        with psycopg.connect(libpq, autocommit=True) as conn, \
                gunicorn(db_url, headers, locate_path(inputs["locate"][0])) as port:
            print(machine_line(conn))
            print(f"set-up (migrations + data + ANALYZE): {load_s:.1f} s; database {make_url(db_url).database}")
            print(f"SQL as imported from gridapp.services.grids: _LOCATE_SQL sha1 {sql_fingerprint(sqls['locate'])}, "
                  f"_PAGE_SQL sha1 {sql_fingerprint(sqls['bbox'])}")
            print("check: " + check_same_answers(client, headers, conn, inputs["locate"][:50], inputs["bbox"][:10]))
            http_conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            http_conn.connect()
            first_socket = http_conn.sock
            variants = [app_variant(APP, APP_SERVER, test_client_call(client, headers)),
                        app_variant(HTTP, HTTP_SERVER, http_call(http_conn, headers)),
                        psql_variant(psql, sqls), psycopg_variant(conn, sqls)]
            times = measure(variants, warm, inputs, args.rounds)
            # http.client silently reconnects when the server closes; make sure it never had to.
            kept_alive = http_conn.sock is first_socket
            http_conn.close()
    finally:
        psql.close()
    print("check: HTTP requests " + ("shared one keep-alive connection" if kept_alive
                                     else "did NOT share one connection (the server closed it)"))
    print(f"contention: at start {load_at_start}; after the timed runs {contention()}")

    results = {(query, label): summarize(times[(query, label)]) for query in QUERIES for label in VARIANTS}
    print_table(results)
    print_ratios(results)
    print_targets(results)
    print_split(locate_split(app, client, headers, inputs["locate"]))
    if args.profile:
        profile_locate(client, headers, inputs["locate"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
