"""The RQ worker and the scheduler, both run inside the app context."""
import logging
import time

from rq import SimpleWorker

from gridapp.extensions import db, redis_store
from gridapp.jobs import enqueue
from gridapp.jobs.dispatch import escalate_overdue, sweep
from gridapp.jobs.exports import purge_exports
from gridapp.jobs.maintenance import fold_map_counts, purge_tokens
from gridapp.jobs.photos import collect_photos

log = logging.getLogger(__name__)

# Periodic jobs: (deterministic job id, function, interval in seconds).
PERIODIC_JOBS = [
    ("purge-tokens", purge_tokens, 3600),
    ("sweep-outbox", sweep, 30),
    ("escalate-overdue", escalate_overdue, 60),
    ("collect-photos", collect_photos, 3600),
    ("fold-map-counts", fold_map_counts, 30),  # the dashboard map's count deltas (docs/dashboard.md)
    ("purge-exports", purge_exports, 3600),
]


class AppWorker(SimpleWorker):
    """An RQ worker that runs each job in-process inside the Flask app context.

    In-process (SimpleWorker) rather than a fork per job: jobs here are short database transactions,
    and forking costs ~13 ms a job (PERF.md §e: 62 vs 214 jobs/s) and would share pooled connections
    across the fork. The session is removed after each job so no transaction outlives it.
    """

    flask_app = None

    def perform_job(self, job, queue, execution):
        with self.flask_app.app_context():
            try:
                return super().perform_job(job, queue, execution)
            finally:
                db.session.remove()


def run_worker(app, queues: list[str], burst: bool = False, name: str | None = None) -> None:
    """Run an RQ worker on the given queues (with RQ's scheduler for delayed retries)."""
    worker_class = type("GridappWorker", (AppWorker,), {"flask_app": app})
    worker = worker_class(queues, connection=redis_store.connection, name=name)
    worker.work(burst=burst, with_scheduler=not burst)


def enqueue_due_jobs(now: float | None = None) -> list[str]:
    """Enqueue each periodic job whose interval has passed; return the ids enqueued.

    A Redis key per job (SET NX with the interval as expiry) makes this safe with several schedulers
    or restarts: each job is enqueued at most once per interval.
    """
    enqueued = []
    for job_id, func, interval in PERIODIC_JOBS:
        if redis_store.connection.set(f"gridapp:scheduler:{job_id}", int(now or time.time()), nx=True, ex=interval):
            enqueue(func, job_id=f"{job_id}-{int(now or time.time())}")
            enqueued.append(job_id)
    return enqueued


def run_scheduler(interval_seconds: float, once: bool = False) -> None:
    """Loop forever (or once), enqueueing periodic jobs when they are due."""
    while True:
        for job_id in enqueue_due_jobs():
            log.info("scheduler enqueued %s", job_id)
        if once:
            return
        time.sleep(interval_seconds)
