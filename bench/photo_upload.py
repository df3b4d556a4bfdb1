"""Photo uploads: tus throughput on loopback against a plain file copy of the same bytes (same run), and
the server's peak RSS while 1 GB of photos goes through it.

Run from the project root (the database must exist with PostGIS: `scripts/setup.sh gridapp_bench_photos`):

    .venv/bin/python -m bench.photo_upload [--photos 100] [--photo-mb 3] [--big-total-mb 1024] [--smoke]

The database is GRIDAPP_BENCH_PHOTOS_DB_URL (default gridapp_bench_photos on 127.0.0.1); its name must end in
`_bench_photos`, because the script drops every table and rebuilds the schema with the migrations.

What is measured:
- copy: each photo file copied to another file on the same disk (shutil.copyfile), one after the other;
- upload: the reference phone client (PhoneClient + HttpTransport, one keep-alive connection) uploads the same
  files, one after the other, with tus (1 MiB chunks, each with its SHA-256 checksum) to gunicorn (gthread,
  2 workers × 4 threads, as scripts/run.sh) on loopback; the server stores each chunk, then verifies the whole
  file (SHA-256 and a full decode by Pillow) and writes the blob: every byte is written twice and read twice.
  The reports declaring the photos are pushed before the clock starts. Rate = photo bytes / wall time.
- peak RSS: the gunicorn workers' VmHWM (peak resident set, reset after warm-up through /proc/PID/clear_refs)
  while `--big-total-mb` of larger photos (`--big-photo-mb` each) is uploaded.

The plain copy is the floor of any upload (the same bytes, the same disk, no network, no checks); the ratio
says how far the verified upload is from it. Targets are printed as MET or MISSED and never change the exit status; the exit status is 1 only when the upload
itself went wrong (a photo not stored exactly once, byte for byte).
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from bench.grid_queries import contention, libpq_url, machine_line, make_app, reset_schema
from bench.sync_push import gunicorn_process
from sync.client import HttpTransport, PhoneClient

DB_ENV = "GRIDAPP_BENCH_PHOTOS_DB_URL"
DEFAULT_DB_URL = "postgresql+psycopg://gridapp:gridapp@127.0.0.1:5432/gridapp_bench_photos"
REDIS_URL = "redis://127.0.0.1:6379/14"  # as bench.grid_queries: its derive jobs are removed at the end
PASSWORD = "bench-pass-123"
TARGET_UPLOAD_MB_S = 10.0  # one phone over loopback: 20× a good 3G/4G uplink, so the server is never the bottleneck
TARGET_RSS_GROWTH_MIB = 64  # peak RSS growth of a worker while 1 GB goes through


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db-url", default=None)
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--photo-mb", type=float, default=3.0)
    parser.add_argument("--big-total-mb", type=int, default=1024)
    parser.add_argument("--big-photo-mb", type=float, default=20.0)
    parser.add_argument("--chunk-kib", type=int, default=1024)
    parser.add_argument("--smoke", action="store_true", help="tiny run (inside the test suite)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.photos, args.photo_mb, args.big_total_mb, args.big_photo_mb = 4, 0.5, 4, 2.0
    return args


def bench_db_url(explicit: str | None) -> str:
    url = explicit or os.environ.get(DB_ENV, DEFAULT_DB_URL)
    if not (make_url(url).database or "").endswith("_bench_photos"):
        sys.exit("bench: refusing to wipe a database whose name does not end in _bench_photos.")
    return url


def make_photos(directory: Path, count: int, size_mb: float, prefix: str) -> list[Path]:
    """Real JPEGs (Pillow) padded with random comment bytes to the size: distinct hashes, decodable."""
    from tests.photos.images import jpeg

    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for number in range(count):
        path = directory / f"{prefix}{number:04d}.jpg"
        path.write_bytes(jpeg(width=640, height=480, size=int(size_mb * 1024 * 1024)))
        paths.append(path)
    return paths


def copy_rate(paths: list[Path], target: Path) -> tuple[float, int]:
    target.mkdir(parents=True, exist_ok=True)
    total = sum(p.stat().st_size for p in paths)
    started = time.perf_counter()
    for path in paths:
        shutil.copyfile(path, target / path.name)
    return total / (time.perf_counter() - started), total


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def workers_of(master_pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()]


def reset_peaks(pids: list[int]) -> dict[int, int]:
    for pid in pids:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    return {pid: status_kib(pid, "VmRSS") for pid in pids}


def upload(phone: PhoneClient, paths: list[Path], chunk_kib: int) -> tuple[float, dict]:
    """Declare the photos in reports, push them (not timed), then time the uploads."""
    for number, path in enumerate(paths):
        phone.report("06010", f"bench photo {number}", 120.0005, 30.4995, photos=[str(path)])
    phone.push()
    started = time.perf_counter()
    counts = phone.upload_photos(chunk_bytes=chunk_kib * 1024)
    return time.perf_counter() - started, counts


def mb(value: float) -> str:
    return f"{value / 1e6:,.1f} MB"


def main(argv=None) -> int:
    args = parse_args(argv)
    db_url = bench_db_url(args.db_url)
    app = make_app(db_url)
    app.config["REDIS_URL"] = REDIS_URL
    with app.app_context():
        from gridapp.extensions import db
        from gridapp.services.areas import ensure_area
        from gridapp.services.users import create_user

        reset_schema()
        county = ensure_area("330521", "德清县", "county")
        township = ensure_area("330521101", "乾元镇", "township", county)
        create_user("bench_worker", "grid_worker", township, PASSWORD)
        db.session.commit()
        db.session.remove()
    with psycopg.connect(libpq_url(db_url)) as conn:
        print(machine_line(conn))
    print(contention())
    ok = True
    with tempfile.TemporaryDirectory(prefix="gridapp-bench-photos-") as work:
        work = Path(work)
        photos = make_photos(work / "gallery", args.photos, args.photo_mb, "IMG_")
        big_count = max(1, int(args.big_total_mb // args.big_photo_mb))
        big = make_photos(work / "gallery", big_count, args.big_photo_mb, "BIG_")
        rate_copy, total = copy_rate(photos, work / "copy")
        env = {"GRIDAPP_PHOTO_STORAGE_DIR": str(work / "store"), "GRIDAPP_PHOTO_MAX_BYTES": str(64 * 1024 * 1024),
               "GRIDAPP_REDIS_URL": REDIS_URL, "GRIDAPP_ARGON2_TIME_COST": "1", "GRIDAPP_ARGON2_MEMORY_KIB": "1024"}
        with gunicorn_process(db_url, workers=2, threads=4, extra_env=env) as (base_url, master):
            print(f"server: gunicorn gthread 2 workers × 4 threads at {base_url}; storage: local files; "
                  f"chunks of {args.chunk_kib} KiB with SHA-256 checksums")
            phone = PhoneClient(HttpTransport(base_url), str(work / "phone.sqlite"))
            phone.register("bench_worker", PASSWORD)
            seconds, counts = upload(phone, photos, args.chunk_kib)
            rate_upload = total / seconds
            ok &= counts["uploaded"] == len(photos)
            pids = workers_of(master.pid)
            before = reset_peaks(pids)
            big_seconds, big_counts = upload(phone, big, args.chunk_kib)
            peaks = {pid: status_kib(pid, "VmHWM") for pid in pids}
            ok &= big_counts["uploaded"] == len(big)
        ok &= _stored_exactly_once(work / "store", photos + big)
        big_total = sum(p.stat().st_size for p in big)
        _remove_derive_jobs(photos + big)

    ratio = rate_upload / rate_copy
    growth_mib = max(peaks[pid] - before[pid] for pid in pids) / 1024
    print(f"\nthroughput ({len(photos)} photos, {mb(total)}, one after the other, loopback):")
    print(f"  plain file copy           {rate_copy / 1e6:8.1f} MB/s")
    print(f"  tus upload (verified)     {rate_upload / 1e6:8.1f} MB/s   ratio {ratio:.3f} of the copy")
    print(f"  target ≥ {TARGET_UPLOAD_MB_S:g} MB/s for one phone: "
          f"{'MET' if rate_upload / 1e6 >= TARGET_UPLOAD_MB_S else 'MISSED'}")
    print(f"\npeak RSS while {len(big)} photos of {args.big_photo_mb:g} MB ({mb(big_total)}) were uploaded "
          f"in {big_seconds:.1f} s ({big_total / big_seconds / 1e6:.1f} MB/s):")
    for pid in pids:
        print(f"  worker {pid}: {before[pid] / 1024:6.1f} MiB after warm-up → peak {peaks[pid] / 1024:6.1f} MiB")
    print(f"  largest growth {growth_mib:.1f} MiB (target ≤ {TARGET_RSS_GROWTH_MIB} MiB: "
          f"{'MET' if growth_mib <= TARGET_RSS_GROWTH_MIB else 'MISSED'})")
    print(f"\nresult: {'every photo stored exactly once, byte for byte' if ok else 'UPLOAD WENT WRONG'}")
    return 0 if ok else 1


def _stored_exactly_once(store: Path, paths: list[Path]) -> bool:
    import hashlib

    from gridapp.services.photos import blob_key

    blobs = [p for p in (store / "blobs").rglob("*") if p.is_file()]
    expected = {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in paths}
    if len(blobs) != len(expected):
        return False
    return all((store / blob_key(digest)).read_bytes() == path.read_bytes() for digest, path in expected.items())


def _remove_derive_jobs(paths: list[Path]) -> None:
    """The server enqueued a derive job per photo; no worker runs here, so remove them from Redis."""
    import hashlib

    from redis import Redis
    from rq.exceptions import NoSuchJobError
    from rq.job import Job

    connection = Redis.from_url(REDIS_URL)
    for path in paths:
        try:
            Job.fetch(f"derive-{hashlib.sha256(path.read_bytes()).hexdigest()}", connection=connection).delete()
        except NoSuchJobError:
            pass


if __name__ == "__main__":
    sys.exit(main())
