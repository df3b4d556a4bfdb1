"""Export of N incidents (default 1,000,000) to GeoJSON and GeoPackage by gridapp's exporters, against
`ogr2ogr` reading the same table and against streaming GeoJSON straight out of PostgreSQL with
`COPY (SELECT ST_AsGeoJSON(t.*) …) TO STDOUT` (the practical limit), in the same run.

Run from the project root (the database must exist with PostGIS: `scripts/setup.sh gridapp_bench_export`):

    .venv/bin/python -m bench.export [--incidents 1000000] [--cells 10000] [--smoke]

Database: GRIDAPP_BENCH_EXPORT_DB_URL (default gridapp_bench_export); its name must end in `_bench_export`,
because the script drops every table and rebuilds the schema with the migrations.

Data: a county grid of --cells cells (bench.grid_queries.load_grid), the default catalogue, one grid worker;
N incidents loaded set-based by ONE `INSERT … SELECT generate_series` (bench.sync_pull.load_incidents).

Each method runs in its own child process; wall time is measured around it and the peak RSS of that child
comes from GNU time (`/usr/bin/time -f %M`, Debian package `time`, installed by scripts/setup.sh). gridapp's exporters run exactly as a direct download does
(services/exports.py: server-side cursor, masking on, the five-table join and all 19 fields), written to a
file. ogr2ogr reads the bare `incidents` table (`PG:` driver, all columns). Two COPY baselines stream
rows into a FeatureCollection file: `copy_table`, `ST_AsGeoJSON(t.*)` of the bare table (PERF.md §c's
method), and `copy_same`, the very features our export writes (its own SQL: the five-table join and the 19
fields, closed in SQL), which is the limit the GeoJSON target is measured against. Every output is opened with ogrinfo
(GeoJSON/GPKG) and its feature count checked.

Targets (issue 7): GeoJSON no slower than ogr2ogr and within 2× of COPY; GeoPackage within 1.5× of ogr2ogr;
peak memory under 150 MB whatever the row count. Printed as MET or MISSED; the exit status is 1 only when an
export is wrong (a count mismatch or a failed method).
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import psycopg
from sqlalchemy.engine import make_url

from bench.grid_queries import grid_for, libpq_url, load_grid, make_app, reset_schema
from bench.sync_pull import load_incidents

DB_ENV = "GRIDAPP_BENCH_EXPORT_DB_URL"
DEFAULT_DB_URL = "postgresql+psycopg://gridapp:gridapp@127.0.0.1:5432/gridapp_bench_export"
COUNTY_PREFIX = "330521"
MEMORY_TARGET_MB = 150


def bench_db_url() -> str:
    url = os.environ.get(DB_ENV, DEFAULT_DB_URL)
    name = make_url(url).database or ""
    if not name.endswith("_bench_export"):
        sys.exit(f"bench: refusing to wipe database {name!r}; its name must end in _bench_export.")
    return url


def build(db_url: str, cells: int, incidents: int) -> dict:
    from gridapp.extensions import db
    from gridapp.models import AdminArea
    from gridapp.services.categories import import_catalogue, parse_catalogue_csv
    from gridapp.services.demo import DEFAULT_CATALOGUE
    from gridapp.services.users import create_user

    app = make_app(db_url)
    started = time.perf_counter()
    with app.app_context():
        reset_schema()
        load_grid(grid_for(max(cells, 800)))
        import_catalogue(parse_catalogue_csv(DEFAULT_CATALOGUE.read_text(encoding="utf-8")))
        township = db.session.scalars(db.select(AdminArea).where(AdminArea.level == "township")).first()
        create_user("bench_reporter", "grid_worker", township, "bench-pass-123")
        db.session.commit()
        db.session.remove()
    load = load_incidents(db_url, incidents, "bench_reporter", seed=7)
    return {"setup_s": time.perf_counter() - started, **load}


def existing(db_url: str, incidents: int) -> dict | None:
    """The loaded data when it already holds exactly `incidents` rows (--reuse), else None."""
    try:
        with psycopg.connect(libpq_url(db_url)) as conn:
            rows, size = conn.execute("SELECT count(*), pg_size_pretty(pg_total_relation_size('incidents')) "
                                      "FROM incidents").fetchone()
    except psycopg.Error:
        return None
    return {"setup_s": 0.0, "insert_s": 0.0, "vacuum_s": 0.0, "rows": rows, "size": size} if rows == incidents else None


# --- the methods, each run in a child process ------------------------------------------------------
def child(method: str, db_url: str, out: str) -> None:
    if method in ("ours_geojson", "ours_gpkg"):
        from gridapp.services import exports
        from gridapp.services.filters import IncidentFilter

        app = make_app(db_url)
        with app.app_context():
            # What a running server spends: the export alone, and the memory it adds to the loaded app.
            started, app_rss = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            export = exports.Export(exports.INCIDENTS, IncidentFilter(), COUNTY_PREFIX)
            if method == "ours_geojson":
                with open(out, "wb") as handle:
                    for chunk in exports.geojson_chunks(export):
                        handle.write(chunk)
            else:
                exports.write_gpkg(export, out)
            with open(out + ".inner", "w", encoding="ascii") as handle:
                handle.write(f"{time.perf_counter() - started} {app_rss}")
    elif method in ("copy_table", "copy_same"):
        if method == "copy_table":
            sql, params = "COPY (SELECT ST_AsGeoJSON(t.*) FROM incidents t) TO STDOUT", None
        else:  # the statement the parent wrote: our export's own SQL, features completed in PostgreSQL
            with open(out + ".sql", encoding="utf-8") as handle:
                sql, params = json.load(handle)
        with psycopg.connect(libpq_url(db_url)) as conn, open(out, "wb") as handle:
            handle.write(b'{"type":"FeatureCollection","features":[\n')
            first = True
            with conn.cursor().copy(sql, params) as copy:
                # COPY text format: one row per line; ST_AsGeoJSON output has no tabs or backslashes to unescape.
                pending = b""
                for block in copy:
                    pending += bytes(block)
                    lines = pending.split(b"\n")
                    pending = lines.pop()
                    if lines:
                        handle.write((b"" if first else b",\n") + b",\n".join(lines))
                        first = False
            handle.write(b"\n]}\n")
    else:
        raise SystemExit(f"unknown method {method}")


def same_geojson_sql(db_url: str) -> list:
    """Our GeoJSON export's COPY statement, closing each feature in SQL (personal fields as stored)."""
    from gridapp.services import exports
    from gridapp.services.filters import IncidentFilter

    sql, params, _ = exports.geojson_copy_sql(exports.Export(exports.INCIDENTS, IncidentFilter(), COUNTY_PREFIX),
                                              complete=True)
    return [sql, params]


def pg_source(db_url: str) -> str:
    url = make_url(db_url)
    return (f"PG:host={url.host} port={url.port or 5432} dbname={url.database} user={url.username} "
            f"password={url.password}")


def run_method(method: str, db_url: str, out: str) -> tuple[float, float, tuple | None]:
    """Run one method in a child under GNU time; return (wall seconds, peak RSS MB of the child, and for
    ours (export seconds, app RSS MB before the export)).

    GNU time (not wait4 here: a child forked from this process starts with its memory counted)."""
    if method.startswith("ogr2ogr_"):
        driver = {"ogr2ogr_geojson": "GeoJSON", "ogr2ogr_gpkg": "GPKG"}[method]
        argv = ["ogr2ogr", "-f", driver, out, pg_source(db_url), "incidents"]
    else:
        argv = [sys.executable, "-m", "bench.export", "--child", method, "--out", out]
    if os.path.exists(out):
        os.remove(out)
    peak_file = out + ".rss"
    started = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", peak_file, *argv], env={**os.environ, DB_ENV: db_url})
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{method} failed with exit status {result.returncode}")
    with open(peak_file, encoding="ascii") as handle:
        peak_kb = int(handle.read().split()[-1])
    os.remove(peak_file)
    inner = None
    if os.path.exists(out + ".inner"):
        with open(out + ".inner", encoding="ascii") as handle:
            seconds, app_kb = handle.read().split()
        inner = (float(seconds), int(app_kb) / 1024)
        os.remove(out + ".inner")
    return elapsed, peak_kb / 1024, inner


def feature_count(path: str) -> int:
    output = subprocess.run(["ogrinfo", "-ro", "-al", "-so", path], capture_output=True, text=True, check=True).stdout
    return int(output.split("Feature Count: ", 1)[1].split()[0])


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--incidents", type=int, default=1_000_000)
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--smoke", action="store_true", help="tiny: 2,000 incidents, 800 cells")
    parser.add_argument("--reuse", action="store_true", help="keep the loaded incidents if the count matches")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    db_url = bench_db_url()
    if args.child:
        child(args.child, db_url, args.out)
        return 0
    if args.smoke:
        args.incidents, args.cells = 2_000, 800
    print(f"# bench.export: {args.incidents:,} incidents, {args.cells:,} cells, database {make_url(db_url).database}")
    print(f"# machine: {os.cpu_count()} CPUs, shared with other work; each method once, in a child process")
    load = existing(db_url, args.incidents) if args.reuse else None
    load = load or build(db_url, args.cells, args.incidents)
    print(f"load: set-up {load['setup_s']:.1f} s, insert {load['insert_s']:.1f} s, vacuum {load['vacuum_s']:.1f} s, "
          f"{load['rows']:,} rows, table {load['size']}")
    methods = [("copy_table", "geojson"), ("copy_same", "geojson"), ("ogr2ogr_geojson", "geojson"),
               ("ours_geojson", "geojson"), ("ogr2ogr_gpkg", "gpkg"), ("ours_gpkg", "gpkg")]
    results, failed = {}, False
    with tempfile.TemporaryDirectory(prefix="gridapp-bench-export-") as workdir:
        for method, ext in methods:
            out = os.path.join(workdir, f"{method}.{ext}")
            if method == "copy_same":
                with open(out + ".sql", "w", encoding="utf-8") as handle:
                    json.dump(same_geojson_sql(db_url), handle)
            seconds, peak_mb, inner = run_method(method, db_url, out)
            count = feature_count(out)
            size_mb = os.path.getsize(out) / 1e6
            results[method] = (seconds, peak_mb, inner)
            ok = count == load["rows"]
            failed |= not ok
            extra = (f"  [in a loaded app: {inner[0]:.2f} s, +{peak_mb - inner[1]:.1f} MB over the app's "
                     f"{inner[1]:.0f} MB]" if inner else "")
            print(f"{method:16s} {seconds:8.2f} s  {load['rows'] / seconds / 1000:8.1f} k rows/s  peak RSS "
                  f"{peak_mb:7.1f} MB  file {size_mb:8.1f} MB  features {count:,}{'' if ok else '  WRONG COUNT'}{extra}")
            os.remove(out)
    ours_json, ogr_json, copy_json = (results[m][0] for m in ("ours_geojson", "ogr2ogr_geojson", "copy_same"))
    ours_gpkg, ogr_gpkg = results["ours_gpkg"][0], results["ogr2ogr_gpkg"][0]
    peak = max(results["ours_geojson"][1], results["ours_gpkg"][1])
    added = max(results[m][1] - results[m][2][1] for m in ("ours_geojson", "ours_gpkg"))
    inner_json, inner_gpkg = results["ours_geojson"][2][0], results["ours_gpkg"][2][0]
    print("whole process (ours includes ~2-3 s of Python imports and app creation; ogr2ogr its own start):")
    print(f"  GeoJSON: ours / ogr2ogr = {ours_json / ogr_json:.2f} (target ≤ 1.0: {verdict(ours_json <= ogr_json)}); "
          f"ours / COPY = {ours_json / copy_json:.2f} (target ≤ 2.0: {verdict(ours_json <= 2 * copy_json)})")
    print(f"  GeoPackage: ours / ogr2ogr = {ours_gpkg / ogr_gpkg:.2f} "
          f"(target ≤ 1.5: {verdict(ours_gpkg <= 1.5 * ogr_gpkg)})")
    print("export alone, as in a running server:")
    print(f"  GeoJSON: ours / ogr2ogr = {inner_json / ogr_json:.2f} ({verdict(inner_json <= ogr_json)}); "
          f"ours / COPY = {inner_json / copy_json:.2f} ({verdict(inner_json <= 2 * copy_json)})")
    print(f"  GeoPackage: ours / ogr2ogr = {inner_gpkg / ogr_gpkg:.2f} ({verdict(inner_gpkg <= 1.5 * ogr_gpkg)})")
    print(f"peak memory: whole process {peak:.1f} MB (target < {MEMORY_TARGET_MB} MB: "
          f"{verdict(peak < MEMORY_TARGET_MB)}); added by the export to the loaded app {added:.1f} MB "
          f"({verdict(added < MEMORY_TARGET_MB)})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
