"""200 phones syncing at once after an outage: push latency under the herd, total time, and nothing lost.

Run from the project root (the database must exist with PostGIS: `scripts/setup.sh gridapp_bench_sync`):

    .venv/bin/python -m bench.sync_outage [--phones 200] [--reports 20] [--edits 3] [--notes 2] [--smoke]

Database: GRIDAPP_BENCH_SYNC_DB_URL (default gridapp_bench_sync), wiped and rebuilt by the migrations.

Scenario. Each of N grid workers (own cells, --cells-per-worker of one village) has one phone: the reference
client (PhoneClient + HttpTransport) in its own thread, talking to gunicorn on loopback (gunicorn.conf.py, as
scripts/run.sh). Before the outage every phone registers, reports --pre incidents and syncs
(untimed, at most 16 phones at a time). During the outage it makes a backlog offline: --reports new reports,
--edits description edits and --notes notes on the incidents it already holds. Then all phones are released
at once: each pushes its outbox (batches of 100) and pulls until caught up. Every request is timed.

Baseline, same run: 5 extra phones with the same backlog push one at a time on the idle server first
(unloaded push latency).

Checks (printed; the exit status is 1 when one fails, never for latency): every mutation a phone made has exactly one receipt (or, with none, one
quarantine row); no outbox item is left; the incident count equals the reports made, the note count the
notes made, the revisions the reports plus the applied edits; every phone's verify answers ok.
"""
import argparse
import random
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import psycopg

from bench.grid_queries import contention, libpq_url
from bench.sync_push import (
    bench_app,
    bench_db_url,
    build_world,
    fresh_connection,
    gunicorn,
    header,
    make_phone,
    ms,
    percentile,
    run_phones,
    server_settings,
    verdict,
)
from sync.simulate import check, make_edits, make_reports, pull, push

MUTATIONS = "/api/v1/sync/mutations"
CHANGES = "/api/v1/sync/changes"
PROBES = 5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.sync_outage", description=__doc__.split("\n")[0])
    parser.add_argument("--phones", type=int, default=200)
    parser.add_argument("--reports", type=int, default=20, help="new reports per phone during the outage")
    parser.add_argument("--edits", type=int, default=3, help="offline edits per phone")
    parser.add_argument("--notes", type=int, default=2, help="offline notes per phone")
    parser.add_argument("--pre", type=int, default=3, help="reports per phone synced before the outage")
    parser.add_argument("--cells", type=int, default=10_000)
    parser.add_argument("--cells-per-worker", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--limit-s", type=float, default=1200, help="time limit of the herd (default 1,200 s)")
    parser.add_argument("--db-url", help="default $GRIDAPP_BENCH_SYNC_DB_URL or gridapp_bench_sync")
    parser.add_argument("--smoke", action="store_true", help="tiny scale (5 phones) in seconds")
    args = parser.parse_args(argv)
    if args.smoke:
        args.phones, args.reports, args.edits, args.notes, args.pre, args.cells = 5, 3, 1, 1, 2, 800
    if args.phones < 1 or args.pre < 1 or args.cells_per_worker > 400:
        parser.error("need at least one phone and one pre-outage report; at most 400 cells per worker")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    db_url = bench_db_url(args.db_url)
    backlog = args.reports + args.edits + args.notes
    header(f"gridapp sync outage benchmark: {args.phones} phones, each {args.pre} reports synced before, then a "
           f"backlog of {args.reports} reports + {args.edits} edits + {args.notes} notes = {backlog} mutations, "
           f"seed {args.seed}", db_url)
    app = bench_app(db_url)
    world = build_world(app, args.cells, args.phones + PROBES, args.cells_per_worker)
    print(f"set-up (migrations + grid {world['grid'].cells:,} cells + catalogue + {args.phones + PROBES} workers): "
          f"{world['load_s']:.1f} s")
    workdir = Path(tempfile.mkdtemp(prefix="bench_sync_outage_"))
    made = Counter()  # reports, edits, notes over every phone (probes included)
    made_lock = threading.Lock()

    def before_outage(phone, rng):
        make_reports(phone, args.pre, rng, label="before the outage")
        push(phone)
        pull(phone)
        make_reports(phone, args.reports, rng, label="during the outage")
        make_edits(phone, args.edits, args.notes, rng)
        with made_lock:
            made.update(reports=phone.reports, edits=phone.edits, notes=phone.notes)

    def collect(phone) -> dict:
        return {"index": phone.index, "username": phone.username, "cells": phone.cells,
                "results": {m: r["status"] for m, r in phone.client.results().items()},
                "left": len(phone.client.outbox()), "requests": phone.transport.requests}

    def verify_all(base, outcomes) -> list[float]:
        """Once every phone is done, reopen each store and verify (pulling first if the answer is stale)."""
        seconds = []
        for out in outcomes:
            phone = make_phone(base, out["index"], out["username"], out["cells"], workdir, register=False)
            try:
                check(phone)
                out["verify"] = phone.verify
            finally:
                phone.client.db.close()
            seconds += phone.transport.seconds("POST", "/api/v1/sync/verify")
        return seconds

    with gunicorn(db_url) as base:
        print("server: gunicorn gthread {} workers × {} threads at {}".format(*server_settings(), base))
        # Baseline: the same backlog pushed by one phone at a time on an idle server.
        probe_times, probe_outcomes = [], []
        for index, (username, cells) in enumerate(world["workers"][args.phones:]):
            phone = make_phone(base, 10_000 + index, username, cells, workdir)
            before_outage(phone, random.Random(f"{args.seed}:probe:{index}"))
            push(phone)
            pull(phone)
            probe_times += phone.transport.seconds("POST", MUTATIONS)[-1:]
            probe_outcomes.append(collect(phone))
            phone.client.db.close()
        print(f"baseline, one phone at a time on the idle server, push of {backlog} mutations: {ms(probe_times)}")

        setup_gate = threading.Semaphore(16)
        herd = world["workers"][:args.phones]
        setup_started = time.perf_counter()

        def setup(index):
            username, cells = herd[index]
            with setup_gate:
                phone = make_phone(base, index, username, cells, workdir, timeout=900)
                phone.transport.requests.clear()
                before_outage(phone, random.Random(f"{args.seed}:{index}"))
                phone.transport.requests.clear()  # only the recovery's requests count below
                fresh_connection(phone)  # back online after the outage: a new connection
            return phone

        def recover(phone):
            phone.started = time.perf_counter()
            push(phone)
            pull(phone)
            phone.finished = time.perf_counter()

        def finish(phone):
            out = collect(phone)
            out["sync_s"] = phone.finished - phone.started
            return out

        print(f"pre-outage sync and offline backlog of {args.phones} phones: setting up…", flush=True)
        wall, outcomes, errors = run_phones(args.phones, setup, recover, finish, args.limit_s)
        setup_s = time.perf_counter() - setup_started - wall
        outcomes = [o for o in outcomes if o]
        verify_s = verify_all(base, outcomes + probe_outcomes)
    print(f"set-up of the herd (register + pre-outage sync + backlog, ≤ 16 at a time): {setup_s:.1f} s")
    print(f"contention after the herd: {contention()}")

    requests = [r for o in outcomes for r in o["requests"]]
    push_s = [s for m, path, _, s in requests if m == "POST" and path == MUTATIONS]
    pull_s = [s for m, path, _, s in requests if m == "GET" and path == CHANGES]
    failed = [(m, path, st) for m, path, st, _ in requests if st >= 400 or st == 0]
    sync_s = [o["sync_s"] for o in outcomes]
    statuses = Counter(st for o in outcomes + probe_outcomes for st in o["results"].values())
    mutations = backlog * len(outcomes)  # the results tables also hold the pre-outage reports
    print(f"\nthe herd: {len(outcomes)} of {args.phones} phones done in {wall:.2f} s (first push to last pull), "
          f"{mutations:,} mutations = {mutations / wall:,.0f} mutations/s; errors {len(errors)}, "
          f"HTTP failures {len(failed)}")
    for line in errors[:5]:
        print("  error: " + line)
    print(f"  push requests ({backlog} mutations each): {ms(push_s)}")
    print(f"  pull requests: {ms(pull_s)}")
    print(f"  verify requests (after the herd, one phone at a time, not in the wall time): {ms(verify_s)}")
    print(f"  per-phone sync (push + pull): {ms(sync_s)}")
    print(f"  statuses over all phones: {dict(statuses)}")
    if probe_times and push_s:
        base_p50 = percentile(probe_times, 50)
        print(f"ratio: herd push p95 / idle push p50 = {percentile(push_s, 95) / base_p50:.1f}×, "
              f"herd push max / idle push p50 = {max(push_s) / base_p50:.1f}×")

    everyone = outcomes + probe_outcomes
    ids = [uuid.UUID(m) for o in everyone for m in o["results"]]
    with psycopg.connect(libpq_url(db_url)) as conn:
        receipts = dict(conn.execute("SELECT mutation_id, count(*) FROM sync_receipts WHERE mutation_id = ANY(%s) "
                                     "GROUP BY 1", (ids,)).fetchall())
        quarantined = dict(conn.execute("SELECT mutation_id, count(*) FROM sync_quarantine "
                                        "WHERE mutation_id = ANY(%s) GROUP BY 1", (ids,)).fetchall())
        incidents, notes, revisions, unstamped = conn.execute(
            "SELECT (SELECT count(*) FROM incidents), (SELECT count(*) FROM incident_notes), "
            "(SELECT count(*) FROM incident_revisions), (SELECT count(*) FROM incidents WHERE sync_seq IS NULL)"
        ).fetchone()
    once = sum(1 for m in ids if receipts.get(m, 0) == 1 or (receipts.get(m, 0) == 0 and quarantined.get(m) == 1))
    applied_edits = sum(1 for o in everyone for m, st in o["results"].items() if st in ("applied", "merged")) \
        - made["reports"] - made["notes"]
    left = sum(o["left"] for o in everyone)
    not_ok = [o["username"] for o in everyone if o.get("verify") != "ok"]
    expected_phones = args.phones + PROBES
    checks = [
        (f"every phone finished ({len(everyone)} of {expected_phones})", len(everyone) == expected_phones),
        (f"mutations with exactly one receipt or quarantine row: {once:,} of {len(ids):,} "
         f"(made {made['reports'] + made['edits'] + made['notes']:,})",
         once == len(ids) == made["reports"] + made["edits"] + made["notes"]),
        (f"outbox items left: {left}", left == 0),
        (f"incidents in the database {incidents:,} = reports made {made['reports']:,} (unstamped {unstamped})",
         incidents == made["reports"] and unstamped == 0),
        (f"notes {notes:,} = notes made {made['notes']:,}", notes == made["notes"]),
        (f"revisions {revisions:,} = reports + applied edits {made['reports'] + applied_edits:,}",
         revisions == made["reports"] + applied_edits),
        (f"phones whose verify is ok: {len(everyone) - len(not_ok)} of {len(everyone)}", not not_ok),
        (f"HTTP failures and errors: {len(failed) + len(errors)}", not failed and not errors),
    ]
    print("\nnothing lost, nothing duplicated:")
    for label, ok in checks:
        print(f"  {'ok  ' if ok else 'FAIL'} {label}")
    print(f"\nresult: {args.phones} phones recovered in {wall:.1f} s; push p95 {percentile(push_s, 95) * 1000:.0f} ms, "
          f"max {max(push_s, default=float('nan')) * 1000:.0f} ms; nothing lost: "
          f"{verdict(all(ok for _, ok in checks))}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
