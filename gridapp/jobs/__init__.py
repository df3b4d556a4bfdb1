"""Queues, their limits, and the one way to enqueue. Jobs take ids and primitives, never objects."""
from datetime import timedelta

from rq import Queue

from gridapp.extensions import redis_store

# Per-queue limits in one place (seconds).
QUEUE_LIMITS = {
    "default": {"default_timeout": 300, "result_ttl": 3600, "failure_ttl": 30 * 24 * 3600},
}


def queue(name: str = "default") -> Queue:
    """Return an RQ queue on the app's Redis."""
    limits = QUEUE_LIMITS[name]
    return Queue(name, connection=redis_store.connection, default_timeout=limits["default_timeout"])


def enqueue(func, *args, queue_name: str = "default", job_id: str | None = None, delay_seconds: float = 0,
            **kwargs):
    """Enqueue a job after the caller has committed (to run after `delay_seconds`, by the worker's
    scheduler, when given); returns the job. `result_ttl=0` (in kwargs) keeps no result: for jobs whose
    effect is in the database, it saves RQ's result writes."""
    limits = QUEUE_LIMITS[queue_name]
    options = {"result_ttl": limits["result_ttl"], "failure_ttl": limits["failure_ttl"], **kwargs, "job_id": job_id}
    if delay_seconds:
        return queue(queue_name).enqueue_in(timedelta(seconds=delay_seconds), func, *args, **options)
    return queue(queue_name).enqueue(func, *args, **options)


def enqueue_many(func, jobs: list[tuple[str, tuple]], queue_name: str = "default", **kwargs) -> None:
    """Enqueue many calls of one function, given as (job id, args), in one Redis round trip (after commit)."""
    limits = QUEUE_LIMITS[queue_name]
    target = queue(queue_name)
    target.enqueue_many([Queue.prepare_data(func, args, job_id=job_id, result_ttl=limits["result_ttl"],
                                            failure_ttl=limits["failure_ttl"], **kwargs) for job_id, args in jobs])
