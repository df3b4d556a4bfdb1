from datetime import timedelta

from sqlalchemy import func, select

from gridapp.extensions import db, redis_store
from gridapp.jobs import enqueue, queue
from gridapp.jobs.maintenance import purge_tokens
from gridapp.jobs.worker import enqueue_due_jobs, run_worker
from gridapp.models import ApiToken, utcnow
from tests.factories import make_user, make_world, token_for


def test_purge_job_runs_through_a_real_worker(app):
    world = make_world()
    user = make_user("dispatcher", "dispatcher", world["township_a"])
    token_for(user)
    token_for(user)
    db.session.execute(ApiToken.__table__.update().where(ApiToken.id == 1)
                       .values(expires_at=utcnow() - timedelta(days=2)))
    db.session.commit()

    job = enqueue(purge_tokens)
    run_worker(app, ["default"], burst=True)
    job.refresh()
    assert job.is_finished and job.return_value() == 1
    assert db.session.scalar(select(func.count()).select_from(ApiToken)) == 1


def test_scheduler_enqueues_each_periodic_job_once_per_interval(app):
    assert enqueue_due_jobs(now=1000) == ["purge-tokens", "sweep-outbox", "escalate-overdue", "collect-photos",
                                         "fold-map-counts", "purge-exports"]
    assert enqueue_due_jobs(now=1001) == []  # a second scheduler or a restart does not double it
    assert queue().count == 6
    redis_store.connection.delete("gridapp:scheduler:purge-tokens")  # its interval has passed
    assert enqueue_due_jobs(now=5000) == ["purge-tokens"]
    assert queue().count == 7
