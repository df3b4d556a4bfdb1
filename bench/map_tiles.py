"""Dashboard map tiles with a million incidents: the app's tile endpoint versus bare ST_AsMVT in psql.

Run from the project root (the database must exist with PostGIS: `scripts/setup.sh gridapp_bench_tiles`):

    .venv/bin/python -m bench.map_tiles [--incidents 1000000] [--z14-tiles 20] [--rounds 5] [--smoke]

GRIDAPP_SQLALCHEMY_DATABASE_URI picks the database (default gridapp_bench_tiles on 127.0.0.1). Its name must
contain `_bench`: the script drops every table except spatial_ref_sys and rebuilds the schema with the
migrations, as tests/conftest.py does.

Data. One township (330521101) and a dispatcher scoped to it. N incidents come from ONE
`INSERT … SELECT generate_series` (sync_seq reserved from the app's counter, so the commit-time stamping
trigger has nothing to do; the bucket-count trigger runs once for the statement), at points drawn
uniformly over 0.3° × 0.25° (~29 × 28 km) around 120.2 E 30.25 N: about the density of PERF.md §d's data
(a z14 tile holds ~5,000 points, the z10 tile 853/421 about 60 % of all),
statuses 60 % closed, 15 % handling, 10 % reported, 5 % handling and overdue, 5 % registered, 5 % invalid.

Tiles. z14: `--z14-tiles` tiles drawn at random (seeded) among those within 0.05° of the centre;
z10: the tile holding the centre (x=853, y=421).

Variants, per zoom, each warmed up once, then interleaved round by round so load elsewhere hits all alike:
- app: the Flask test client signed in through the dashboard's login form, GET /dashboard/tiles/z/x/y.mvt
  (session check, area scope, the query, the response), timed around the request and reading the body;
- app SQL in psql: the very text the app runs (maptiles.tile_query) with literal values and the app's
  setting (maptiles.TILE_SETTING: no parallel workers), \\timing per
  statement in one psql process (result discarded);
- bare ST_AsMVT in psql: PERF.md §d's query over the raw points (stored 3857 copy, id and category as
  properties), which at z10 is what a map without the counts table would have to run. The app's z14 tile
  carries status and class instead of the id (see services/maptiles.py), which is part of its lead.
Also measured: the fold of the load's deltas (the periodic job, run once before timing tiles, as it
would within 30 s), the cost of keeping the counts exact (200 single-row status updates, each its own
transaction, with the row trigger on and off), and that counts + deltas equal a recount after the load
and after the updates.

--smoke runs it all at a tiny scale (5,000 incidents, 3 z14 tiles, 2 rounds) in a few seconds.
Printed: the machine and its load, p50/p95 per variant, ratios app / bare, whether the targets hold
(z14 p95 < 50 ms, z10 p95 < 100 ms through the app). Nothing is asserted: this is a measurement.
"""
import argparse
import math
import os
import platform
import random
import re
import statistics
import subprocess
import tempfile
import time

import psycopg
from sqlalchemy import text
from sqlalchemy.engine import make_url

from bench.grid_queries import make_app, reset_schema

DEFAULT_DB = "postgresql+psycopg://gridapp:gridapp@127.0.0.1:5432/gridapp_bench_tiles"
TOWNSHIP = "330521101"
CENTRE = (120.2, 30.25)
PASSWORD = "bench-password-1"

_LOAD = """
WITH counter AS (UPDATE sync_counter SET seq = seq + :n RETURNING seq - :n AS base)
INSERT INTO incidents (id, case_number, version, sync_seq, category_code_raw, description, location, raw_location,
                       township_id, is_outside_grid, status, overdue_at, due_at, reporter_id, clock_suspect,
                       rework_count, is_self_handled, is_ownerless)
SELECT gen_random_uuid(), 'T' || lpad(g::text, 12, '0'), 1, counter.base + g, '06010', '',
       ST_SetSRID(ST_Point(pt.lon, pt.lat), 4326), jsonb_build_object('lon', pt.lon, 'lat', pt.lat, 'crs', 'wgs84'),
       :township, true, st.status, CASE WHEN st.late THEN now() END, CASE WHEN st.late THEN now() END,
       :reporter, false, 0, false, false
FROM counter, generate_series(1, :n) AS g
CROSS JOIN LATERAL (SELECT 120.05 + 0.3 * random() + g * 0 AS lon, 30.125 + 0.25 * random() + g * 0 AS lat) AS pt
CROSS JOIN LATERAL (SELECT CASE WHEN r < 0.60 THEN 'closed' WHEN r < 0.80 THEN 'handling' WHEN r < 0.90 THEN 'reported'
                                WHEN r < 0.95 THEN 'registered' ELSE 'invalid' END AS status,
                           r >= 0.75 AND r < 0.80 AS late
                    FROM (SELECT random() + g * 0 AS r) AS rr) AS st
"""

BARE_SQL = """SELECT ST_AsMVT(t, 'incidents', 4096, 'geom') FROM (
  SELECT ST_AsMVTGeom(location_3857, ST_TileEnvelope({z}, {x}, {y}), 4096, 64, true) AS geom, id::text AS id,
         category_code_raw AS category
  FROM incidents WHERE location_3857 && ST_TileEnvelope({z}, {x}, {y}, margin => 64.0 / 4096)) t"""


def tile_of(lon, lat, z):
    n = 2 ** z
    return z, int((lon + 180) / 360 * n), int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)


def sql_literal(value) -> str:
    if isinstance(value, list):
        return "ARRAY[" + ",".join(sql_literal(v) for v in value) + "]" if value else "'{}'::int[]"
    if isinstance(value, (int, float)):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def with_literals(sql: str, params: dict) -> str:
    return re.sub(r"(?<!:):(\w+)", lambda m: sql_literal(params[m.group(1)]), sql)


def psql_times(db_url: str, statements: list[str], setting: str | None = None) -> list[float]:
    """Run the statements in one psql process with \\timing (after SET `setting`); return each one's ms."""
    url = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as script:
        script.write((f"SET {setting};\n" if setting else "") + "\\timing on\n"
                     + "".join(s.strip() + ";\n" for s in statements))
    try:
        out = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-P", "pager=off", "-o", "/dev/null",
                              "-v", "ON_ERROR_STOP=1", "-f", script.name, url],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    times = [float(t) for t in re.findall(r"Time: ([\d.]+) ms", out)]
    assert len(times) == len(statements), out[-2000:]
    return times


def pct(values, q):
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def set_up(app, n: int) -> dict:
    from gridapp.extensions import db
    from gridapp.services.areas import ensure_area
    from gridapp.services.users import create_user

    with app.app_context():
        reset_schema()
        county = ensure_area("330521", "德清县", "county")
        township = ensure_area(TOWNSHIP, "乾元镇", "township", county)
        user = create_user("bench_dispatcher", "dispatcher", township, PASSWORD)
        db.session.commit()
        start = time.perf_counter()
        db.session.execute(text(_LOAD), {"n": n, "township": township.id, "reporter": user.id})
        db.session.commit()
        load_s = time.perf_counter() - start
        differing = db.session.execute(DIFFERING_FROM_RECOUNT).scalar()
        start = time.perf_counter()
        deltas = db.session.execute(text("SELECT incident_bucket_counts_fold()")).scalar()  # the periodic job
        db.session.commit()
        fold_s = time.perf_counter() - start
        db.session.execute(text("ANALYZE incidents; ANALYZE incident_bucket_counts; ANALYZE incident_bucket_deltas"))
        db.session.commit()
        kept = db.session.execute(text("SELECT sum(n), count(*) FROM incident_bucket_counts WHERE zoom = 17")).one()
        return {"load_s": load_s, "counted": kept[0], "bucket_rows": kept[1], "township_id": township.id,
                "differing": differing, "fold_s": fold_s, "folded": deltas}


def signed_in_client(app):
    client = app.test_client()
    page = client.get("/dashboard/login", base_url="https://localhost").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    response = client.post("/dashboard/login", base_url="https://localhost",
                           data={"csrf_token": token, "username": "bench_dispatcher", "password": PASSWORD})
    assert response.status_code == 302, response.status_code
    return client


def app_times(client, tiles) -> tuple[list[float], int]:
    times, size = [], 0
    for z, x, y in tiles:
        start = time.perf_counter_ns()
        response = client.get(f"/dashboard/tiles/{z}/{x}/{y}.mvt", base_url="https://localhost")
        body = response.data
        times.append((time.perf_counter_ns() - start) / 1e6)
        assert response.status_code == 200
        size = max(size, len(body))
    return times, size


DIFFERING_FROM_RECOUNT = text("""
SELECT count(*) FROM (
  (SELECT zoom, township_id, bx, by, status_class, sum(n) FROM (
     SELECT zoom, township_id, bx, by, status_class, n FROM incident_bucket_counts
     UNION ALL SELECT zoom, township_id, bx, by, status_class, n FROM incident_bucket_deltas) AS kept
   GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0
   EXCEPT SELECT l.zoom, township_id, incident_bucket_x(location_3857) >> (17 - l.zoom),
                 incident_bucket_y(location_3857) >> (17 - l.zoom), incident_status_class(status, overdue_at), count(*)
          FROM incidents CROSS JOIN incident_bucket_levels() AS l(zoom) GROUP BY 1, 2, 3, 4, 5)
  UNION ALL
  (SELECT l.zoom, township_id, incident_bucket_x(location_3857) >> (17 - l.zoom),
          incident_bucket_y(location_3857) >> (17 - l.zoom), incident_status_class(status, overdue_at), count(*)
   FROM incidents CROSS JOIN incident_bucket_levels() AS l(zoom) GROUP BY 1, 2, 3, 4, 5
   EXCEPT SELECT zoom, township_id, bx, by, status_class, sum(n) FROM (
     SELECT zoom, township_id, bx, by, status_class, n FROM incident_bucket_counts
     UNION ALL SELECT zoom, township_id, bx, by, status_class, n FROM incident_bucket_deltas) AS kept
   GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0)) AS d
""")


def differing_rows(app) -> int:
    """Bucket rows (every level) that differ from a recount of the incidents: 0 = exact."""
    from gridapp.extensions import db

    with app.app_context():
        return db.session.execute(DIFFERING_FROM_RECOUNT).scalar()


def trigger_cost(db_url: str, updates: int) -> dict:
    """Milliseconds per single-row status update (own transaction), with the counts trigger on and off.

    Off first, then a rebuild, then on: the counts are left as the trigger kept them, for the exactness check."""
    url = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    results = {}
    with psycopg.connect(url, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM incidents WHERE status = 'handling' LIMIT %s", (updates,))]
        for label, state in (("trigger off", "DISABLE"), ("trigger on", "ENABLE"), ("trigger on again", "ENABLE")):
            conn.execute(f"ALTER TABLE incidents {state} TRIGGER incidents_bucket_counts_update")
            if label == "trigger on":
                conn.execute("SELECT incident_bucket_counts_rebuild()")  # undo what the off phase left behind
            times = []
            for target in ("handled", "handling"):
                for incident_id in ids:
                    start = time.perf_counter_ns()
                    conn.execute("UPDATE incidents SET status = %s WHERE id = %s", (target, incident_id))
                    times.append((time.perf_counter_ns() - start) / 1e6)
            results[label] = times
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--incidents", type=int, default=1_000_000)
    parser.add_argument("--z14-tiles", type=int, default=20)
    parser.add_argument("--z10-runs", type=int, default=20, help="app and app-SQL runs of the z10 tile per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.incidents, args.z14_tiles, args.z10_runs, args.rounds = 5_000, 3, 3, 2
    db_url = os.environ.get("GRIDAPP_SQLALCHEMY_DATABASE_URI", DEFAULT_DB)
    if "_bench" not in (make_url(db_url).database or ""):
        raise SystemExit("bench: refusing to wipe a database whose name lacks _bench")

    print(f"machine: {platform.platform()}, {os.cpu_count()} CPUs, load average {os.getloadavg()}")
    app = make_app(db_url)
    setup = set_up(app, args.incidents)
    print(f"loaded {args.incidents:,} incidents in {setup['load_s']:.1f} s (one INSERT … SELECT, counts trigger "
          f"included); folding its {setup['folded']:,} delta rows took {setup['fold_s']:.2f} s; counted "
          f"{setup['counted']:,} in {setup['bucket_rows']:,} zoom-17 bucket rows")

    rng = random.Random(6)
    z14 = sorted({tile_of(CENTRE[0] + rng.uniform(-0.05, 0.05), CENTRE[1] + rng.uniform(-0.05, 0.05), 14)
                  for _ in range(args.z14_tiles * 3)})
    z14 = rng.sample(z14, min(args.z14_tiles, len(z14)))
    z10 = tile_of(*CENTRE, 10)
    from gridapp.services import maptiles

    with app.app_context():
        client = signed_in_client(app)
        app_sql = {t: with_literals(*maptiles.tile_query(TOWNSHIP, *t)) for t in [*z14, z10]}
    bare = {t: BARE_SQL.format(z=t[0], x=t[1], y=t[2]) for t in [*z14, z10]}

    results = {(zoom, variant): [] for zoom in ("z14", "z10") for variant in ("app", "app SQL", "bare")}
    sizes = {}
    with app.app_context():  # warm-up, untimed
        app_times(client, [*z14, z10])
    psql_times(db_url, [app_sql[t] for t in [*z14, z10]] + [bare[t] for t in z14])
    for _ in range(args.rounds):
        with app.app_context():
            times, sizes["z14"] = app_times(client, z14)
            results[("z14", "app")] += times
            times, sizes["z10"] = app_times(client, [z10] * args.z10_runs)
            results[("z10", "app")] += times
        results[("z14", "app SQL")] += psql_times(db_url, [app_sql[t] for t in z14], maptiles.TILE_SETTING)
        results[("z10", "app SQL")] += psql_times(db_url, [app_sql[z10]] * args.z10_runs, maptiles.TILE_SETTING)
        results[("z14", "bare")] += psql_times(db_url, [bare[t] for t in z14])
        results[("z10", "bare")] += psql_times(db_url, [bare[z10]])

    print(f"\ntiles: z14 {len(z14)} tiles × {args.rounds} rounds; z10 {z10} × {args.z10_runs} runs × {args.rounds} "
          f"rounds (bare: 1 run per round); largest app tile: z14 {sizes['z14']:,} B, z10 {sizes['z10']:,} B")
    print(f"{'zoom':5} {'variant':28} {'n':>4} {'p50 ms':>9} {'p95 ms':>9} {'max ms':>9}")
    labels = {"app": "app (test client, session)", "app SQL": "app SQL in psql", "bare": "bare ST_AsMVT in psql"}
    for (zoom, variant), times in results.items():
        print(f"{zoom:5} {labels[variant]:28} {len(times):>4} {pct(times, 50):>9.2f} {pct(times, 95):>9.2f} "
              f"{max(times):>9.2f}")
    for zoom, target in (("z14", 50), ("z10", 100)):
        app_p50, app_p95 = pct(results[(zoom, "app")], 50), pct(results[(zoom, "app")], 95)
        bare_p50, bare_p95 = pct(results[(zoom, "bare")], 50), pct(results[(zoom, "bare")], 95)
        print(f"{zoom}: app/bare p50 {app_p50 / bare_p50:.2f}, p95 {app_p95 / bare_p95:.2f}; "
              f"target app p95 < {target} ms: {'MET' if app_p95 < target else 'MISSED'} ({app_p95:.1f} ms)")

    costs = trigger_cost(db_url, 20 if args.smoke else 200)
    print("\nkeeping the counts exact: one-row status update in its own transaction (ms)")
    for label, times in costs.items():
        print(f"  {label:16} n={len(times):>4} p50 {pct(times, 50):.3f} p95 {pct(times, 95):.3f}")
    print(f"bucket rows differing from a recount after the load: {setup['differing']}, after the updates with the "
          f"trigger on: {differing_rows(app)} (0 = exact, no staleness)")
    with app.app_context():
        from gridapp.extensions import db

        db.session.remove()
        db.engine.dispose()


if __name__ == "__main__":
    main()
