"""A week in the hills: 200 photos of 2–4 MB (100 reports) pushed by the reference phone client through a
throttled loopback link that drops connections at random, with the app killed and restarted, against
gunicorn in its own process. Every photo must arrive exactly once, each report before its photos, and
the server's memory must stay flat."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bench.sync_push import gunicorn_process
from gridapp.extensions import db
from gridapp.models import Incident, IncidentPhoto, PhotoBlob, PhotoUpload
from sync.client import HttpTransport, PhoneClient
from tests.conftest import TEST_CONFIG, TEST_DB_URL, TEST_REDIS_URL
from tests.factories import PASSWORD, make_user, make_world
from tests.photos.helpers import point_in
from tests.photos.images import jpeg
from tests.photos.netem import FlakyLink

ROOT = Path(__file__).resolve().parents[2]
REPORTS, PHOTOS_PER_REPORT = 100, 2
LINK_BYTES_PER_S = 24 * 1024 * 1024  # throttled, yet fast enough for the suite's time budget
MEAN_BYTES_BETWEEN_CUTS = 6 * 1024 * 1024
KILLS = 4
# The bound: while ~600 MB pass through it, the server worker's peak RSS grows by less than this over
# its resident size after warm-up. Buffering uploads would need a multiple of it.
PEAK_RSS_GROWTH_BOUND_KIB = 48 * 1024


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def worker_pids(master_pid: int) -> list[int]:
    children = Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()
    return [int(pid) for pid in children]


@pytest.mark.slow
def test_a_backlog_of_200_photos_over_a_flaky_link_with_app_kills(app, tmp_path):
    world = make_world(cols=3, rows=2)
    make_user("worker", "grid_worker", world["township_a"], cells=world["cells_a"])
    db.session.commit()
    env = {"GRIDAPP_SECRET_KEY": TEST_CONFIG["SECRET_KEY"], "GRIDAPP_REDIS_URL": TEST_REDIS_URL,
           "GRIDAPP_PHOTO_STORAGE_DIR": TEST_CONFIG["PHOTO_STORAGE_DIR"], "GRIDAPP_ARGON2_TIME_COST": "1",
           "GRIDAPP_ARGON2_MEMORY_KIB": "1024"}
    rng = random.Random(2026)
    photo_dir = tmp_path / "gallery"
    photo_dir.mkdir()
    with gunicorn_process(TEST_DB_URL, workers=1, threads=4, extra_env=env) as (base_url, master):
        store = str(tmp_path / "phone.sqlite")
        phone = PhoneClient(HttpTransport(base_url), store)
        phone.register("worker", PASSWORD)
        # Offline for a week: the reports and their photos pile up in the outbox.
        expected = {}
        for number in range(REPORTS):
            paths = []
            for shot in range(PHOTOS_PER_REPORT):
                path = photo_dir / f"IMG_{number:03d}_{shot}.jpg"
                path.write_bytes(jpeg(size=rng.randint(2_000_000, 4_000_000)))
                paths.append((str(path), "report" if shot == 0 else "before_handling"))
            lon, lat = point_in(number % 6)
            expected[phone.report("06010", f"积压 {number}", lon, lat, photos=paths)] = paths
        hashes = {photo["sha256"] for photo in phone.photos().values()}
        assert len(hashes) == REPORTS * PHOTOS_PER_REPORT
        phone.db.close()
        phone.transport.connection.close()

        (worker,) = worker_pids(master.pid)
        Path(f"/proc/{worker}/clear_refs").write_text("5")  # reset the peak: measure from warm-up on
        baseline_kib = status_kib(worker, "VmRSS")

        link = FlakyLink(base_url, LINK_BYTES_PER_S, MEAN_BYTES_BETWEEN_CUTS)
        log = open(tmp_path / "app.log", "w")
        command = [sys.executable, "-m", "tests.photos.phone_app", link.url, store]
        runs = 0
        try:
            for _ in range(KILLS):  # kill the app at random moments, then start it again
                runs += 1
                app_process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                               env={**os.environ, "PYTHONPATH": str(ROOT)})
                time.sleep(rng.uniform(2.0, 6.0))
                if app_process.poll() is not None:
                    break
                app_process.send_signal(signal.SIGKILL)
                app_process.wait()
            runs += 1
            app_process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                           env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert app_process.wait(timeout=420) == 0, (tmp_path / "app.log").read_text()[-3000:]
        finally:
            if app_process.poll() is None:
                app_process.kill()
            link.close()
            log.close()
        peak_kib = status_kib(worker, "VmHWM")

    db.session.rollback()
    incidents = {str(i.id): i for i in db.session.scalars(select(Incident))}
    assert set(incidents) == set(expected)  # every report arrived, once
    blobs = {b.sha256: b for b in db.session.scalars(select(PhotoBlob))}
    assert set(blobs) == hashes  # every photo arrived, once (one blob per hash)
    declared = db.session.scalars(select(IncidentPhoto)).all()
    assert len(declared) == len(hashes) and all(p.blob_sha256 == p.sha256 for p in declared)
    for photo in declared:  # reports land before their photos
        assert incidents[str(photo.incident_id)].received_at <= blobs[photo.sha256].created_at
    assert db.session.scalar(select(func.count()).select_from(PhotoUpload)) == 0
    stored = Path(TEST_CONFIG["PHOTO_STORAGE_DIR"])
    assert sorted(p.name for p in (stored / "blobs").rglob("*") if p.is_file()) == sorted(hashes)
    assert [p for p in (stored / "uploads").rglob("*") if p.is_file()] == []  # no part left behind
    assert link.cuts > 0 and runs > 1, "the link was cut and the app restarted"
    growth = peak_kib - baseline_kib
    print(f"backlog: {len(hashes)} photos, {link.cuts} cuts, {runs} app runs, worker RSS {baseline_kib} KiB "
          f"→ peak {peak_kib} KiB (+{growth} KiB, bound {PEAK_RSS_GROWTH_BOUND_KIB} KiB)")
    assert growth < PEAK_RSS_GROWTH_BOUND_KIB
