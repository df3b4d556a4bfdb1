"""Profile the dispatch path in-process: the push request for a batch of one (Flask test client) and the route
jobs it produces (a real AppWorker in burst mode), with CPU time per report and SQL statements per report.

Database: GRIDAPP_BENCH_DISPATCH_DB_URL (name ending in _bench_dispatch); `--build` (re)builds the benchmark's
world there (bench.dispatch_latency.set_up; drops every table). Redis: PROFILE_REDIS_URL (default db 12, the
dispatch benchmark's), flushed; give it another database to profile while the benchmark runs.

    .venv/bin/python -m bench.dispatch_profile [--smoke] [--build] [--reports 200] [--profile push|job|none]
                                               [--top 40] [--statements] [--one-at-a-time]

--one-at-a-time pushes from a thread, each report after the last one's webhook arrived, while the worker runs in
the main thread (its CPU by thread_time, its statements counted by thread): the latency benchmark below saturation.
"""
import argparse
import cProfile
import pstats
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import event, select

from bench.dispatch_latency import CATEGORY, HOOK_SECRET, Receiver, bench_db_url
from bench.sync_push import WORKER_PASSWORD
from sync.client import PhoneClient, WsgiTransport
from sync.simulate import random_point


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=200)
    parser.add_argument("--build", action="store_true", help="build the world first (wipes the database)")
    parser.add_argument("--smoke", action="store_true", help="--build, 5 reports")
    parser.add_argument("--profile", choices=("push", "job", "none"), default="none")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--statements", action="store_true", help="print the SQL of the last push and its job")
    parser.add_argument("--one-at-a-time", action="store_true",
                        help="each report's job runs alone (pushes from a thread, each after the last webhook "
                             "arrived), as in the latency benchmark below saturation: per-job fixed costs count fully")
    args = parser.parse_args(argv)
    if args.smoke:
        args.build, args.reports = True, 5
    import os
    os.environ.setdefault("GRIDAPP_DUPLICATE_DISTANCE_M", "0.1")
    from bench.escalation_sweep import SECRET_KEY
    from gridapp import create_app
    app = create_app({"SECRET_KEY": SECRET_KEY, "SQLALCHEMY_DATABASE_URI": bench_db_url(),
                      "REDIS_URL": os.environ.get("PROFILE_REDIS_URL", "redis://127.0.0.1:6379/12"),
                      "ARGON2_TIME_COST": 1, "ARGON2_MEMORY_KIB": 1024})
    app.config["DUPLICATE_DISTANCE_M"] = 0.1
    from gridapp.extensions import db, redis_store
    from gridapp.models import Category, GridCell, Squad, User
    receiver = Receiver()
    if args.build:
        from bench.dispatch_latency import set_up
        set_up(app, receiver.url, 4, register_on_arrival=True)
    with app.app_context():
        redis_store.connection.flushdb()
        squad = db.session.scalar(select(Squad).where(Squad.code == "01"))
        squad.webhook_url, squad.webhook_secret = receiver.url, HOOK_SECRET
        assert os.environ.get("NOAUTO") or db.session.scalar(select(Category.auto_register).where(Category.code == CATEGORY))
        user = db.session.scalar(select(User).where(User.role == "grid_worker", User.username.like("%")).order_by(User.username))
        cells = [c.code for c in user.cells] if hasattr(user, "cells") else []
        username = user.username
        db.session.commit()
        from types import SimpleNamespace

        from geoalchemy2.shape import to_shape

        from bench.sync_push import build_world  # noqa: F401 (only for the cell polygons below)
        polys = [SimpleNamespace(ring=list(to_shape(c.geom).exterior.coords))
                 for c in db.session.scalars(select(GridCell).where(GridCell.code.in_(cells)))]
        db.session.remove()
    statements = {"n": 0}
    with app.app_context():
        engine = db.engine
    log = []

    def count(conn, cursor, statement, *rest):
        statements["n"] += 1
        statements[threading.get_ident()] = statements.get(threading.get_ident(), 0) + 1
        log.append(" ".join(statement.split())[:230])

    event.listen(engine, "before_cursor_execute", count)
    rng = random.Random(time.time_ns())
    with tempfile.TemporaryDirectory() as tmp:
        def new_phone(name):
            phone = PhoneClient(WsgiTransport(app), str(Path(tmp) / name))
            phone.register(username, WORKER_PASSWORD)

            def one(i):
                lon, lat = random_point(rng.choice(polys), rng)
                phone.report(CATEGORY, f"profile {i}", lon, lat)
                res = phone.push(batch_size=1)
                assert res.get("applied") == 1, res
            return one
        one = new_phone("p.sqlite")
        for i in range(10):  # warm-up
            one(i)
        from rq import SimpleWorker  # noqa: F401

        from gridapp.jobs.worker import AppWorker
        worker_class = type("W", (AppWorker,), {"flask_app": app})
        with app.app_context():
            worker_class(["default"], connection=redis_store.connection).work(burst=True)
        statements["n"] = 0
        prof = cProfile.Profile(time.process_time)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if args.profile == "push":
            prof.enable()
        for i in range(0 if args.one_at_a_time else args.reports):
            one(100 + i)
        prof.disable()
        cpu_push, wall_push, st_push = time.process_time() - cpu0, time.perf_counter() - wall0, statements["n"]
        statements["n"] = 0
        if args.one_at_a_time:
            cpu_job, wall_job, st_job = one_at_a_time(app, worker_class, new_phone, receiver, args, prof, statements)
        else:
            cpu0, wall0 = time.process_time(), time.perf_counter()
            if args.profile == "job":
                prof.enable()
            with app.app_context():
                worker_class(["default"], connection=redis_store.connection).work(burst=True)
            prof.disable()
            cpu_job, wall_job, st_job = time.process_time() - cpu0, time.perf_counter() - wall0, statements["n"]
        if args.statements:
            with app.app_context():
                log.clear()
                one(10_000)
                print("-- push of one report:", *log, sep="\n  ")
                log.clear()
                worker_class(["default"], connection=redis_store.connection).work(burst=True)
                print("-- its job:", *log, sep="\n  ")
    n = args.reports
    time.sleep(0.5)
    print(f"push (test client, batch of 1): CPU {cpu_push / n * 1000:.2f} ms, wall {wall_push / n * 1000:.2f} ms, "
          f"SQL {st_push / n:.2f} per report")
    mode = "one job per report" if args.one_at_a_time else f"burst, {n} queued"
    print(f"jobs (AppWorker {mode}): CPU {cpu_job / n * 1000:.2f} ms, wall {wall_job / n * 1000:.2f} ms, "
          f"SQL {st_job / n:.2f} per report; webhooks received {len(receiver.arrivals)}, duplicates {receiver.duplicates}")
    if args.profile != "none":
        pstats.Stats(prof).sort_stats("cumulative").print_stats(args.top)
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    receiver.close()
    return 0


def one_at_a_time(app, worker_class, new_phone, receiver, args, prof, statements):
    """Run the worker in this thread (its CPU by thread_time, its statements by thread; the profile sees
    only it) while a thread pushes one report at a time, each after the previous one's webhook arrived:
    one drain job per report."""
    from rq.command import send_shutdown_command

    from gridapp.extensions import redis_store
    stopper = {}

    def pusher():
        one = new_phone("thread.sqlite")  # a phone's SQLite stays in its thread
        for i in range(args.reports):
            arrived = len(receiver.arrivals)
            one(20_000 + i)
            deadline = time.monotonic() + 10
            while len(receiver.arrivals) <= arrived and time.monotonic() < deadline:
                time.sleep(0.001)
        with app.app_context():
            send_shutdown_command(redis_store.connection, stopper["name"])

    thread = threading.Thread(target=pusher)
    me = threading.get_ident()
    before = statements.get(me, 0)
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    thread.start()
    if args.profile == "job":
        prof.enable()
    with app.app_context():
        worker = worker_class(["default"], connection=redis_store.connection)
        stopper["name"] = worker.name
        worker.work()  # until the pusher, done, sends it a shutdown command
    prof.disable()
    cpu, wall = time.thread_time() - cpu0, time.perf_counter() - wall0
    thread.join()
    return cpu, wall, statements.get(me, 0) - before


if __name__ == "__main__":
    sys.exit(main())
