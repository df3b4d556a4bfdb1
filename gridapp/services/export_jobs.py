"""Large exports as RQ jobs: a record with progress, a file in EXPORT_DIR, a signed download link that
expires, and a cleanup job that deletes expired files (jobs/worker.py PERIODIC_JOBS)."""
import os
import uuid
from datetime import timedelta

from flask import current_app
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import select

from gridapp.errors import ExportLinkInvalid, ExportNotFound, ExportNotReady
from gridapp.extensions import db
from gridapp.models import ExportJob, User, utcnow
from gridapp.services import exports
from gridapp.services.filters import IncidentFilter

SALT = "gridapp.export-download"


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=SALT)


def create_job(user: User, layer: str, fmt: str, flt: IncidentFilter, prefix: str, *, unmasked: bool,
               reason: str | None, srs_id: int) -> ExportJob:
    """Record a job (and, when unmasked, its access-log entry) in the caller's transaction."""
    job = ExportJob(id=uuid.uuid4(), user_id=user.id, layer=layer, format=fmt,
                    filters={**flt.to_json(), "srs_id": srs_id}, scope_prefix=prefix, unmasked=unmasked, state="queued")
    db.session.add(job)
    db.session.flush()
    if unmasked:
        exports.log_unmasked(user, f"export_job.{layer}.{fmt}", reason, flt, job_id=job.id)
    return job


def run_job(job_id: str) -> int:
    """Write the export file, updating progress as batches are written; return the row count."""
    job = db.session.get(ExportJob, uuid.UUID(job_id))
    if job is None or job.state not in ("queued", "running"):
        return 0
    filters = dict(job.filters)
    srs_id = filters.pop("srs_id", 4326)
    flt = IncidentFilter.from_json(filters)
    layer = exports.LAYER_BY_NAME[job.layer]
    job.state, job.rows_total = "running", exports.count_rows(layer, flt, job.scope_prefix)
    db.session.commit()
    os.makedirs(current_app.config["EXPORT_DIR"], exist_ok=True)
    path = os.path.join(current_app.config["EXPORT_DIR"], f"{job.id}.{exports.EXTENSIONS[job.format]}")

    def progress(rows: int):
        # Progress goes through its own short statement: the export's cursor keeps its transaction open.
        with db.engine.begin() as connection:
            connection.exec_driver_sql("UPDATE export_jobs SET rows_done = %(rows)s WHERE id = %(id)s",
                                       {"rows": rows, "id": job.id})

    try:
        count = exports.write_file(exports.Export(layer, flt, job.scope_prefix, job.unmasked, srs_id, progress),
                                   job.format, path)
    except Exception as exc:
        db.session.rollback()
        job = db.session.get(ExportJob, uuid.UUID(job_id))
        job.state, job.error, job.finished_at = "failed", str(exc)[:500], utcnow()
        db.session.commit()
        raise
    db.session.rollback()  # end the read transaction before updating the job
    job = db.session.get(ExportJob, uuid.UUID(job_id))
    now = utcnow()
    job.state, job.rows_done, job.file_path, job.finished_at = "done", count, path, now
    job.expires_at = now + timedelta(seconds=current_app.config["EXPORT_TTL_SECONDS"])
    db.session.commit()
    return count


def job_for(user: User, job_id: uuid.UUID) -> ExportJob:
    """One of the user's jobs. :raises ExportNotFound: none with that id (or another user's)."""
    job = db.session.get(ExportJob, job_id)
    if job is None or job.user_id != user.id:
        raise ExportNotFound(id=str(job_id))
    return job


def download_token(job: ExportJob) -> str:
    return _serializer().dumps(str(job.id))


def job_for_download(token: str) -> ExportJob:
    """Resolve a signed link to a finished job whose file still exists.

    :raises ExportLinkInvalid: bad signature, expired link or expired file.
    :raises ExportNotReady: not finished.
    """
    try:
        job_id = _serializer().loads(token, max_age=current_app.config["EXPORT_TTL_SECONDS"])
    except BadSignature as exc:
        raise ExportLinkInvalid() from exc
    job = db.session.get(ExportJob, uuid.UUID(job_id))
    if job is None or job.state == "expired" or (job.expires_at and job.expires_at < utcnow()):
        raise ExportLinkInvalid()
    if job.state != "done":
        raise ExportNotReady(state=job.state)
    return job


def purge_expired() -> int:
    """Delete expired export files and mark their jobs expired; return how many."""
    jobs = db.session.scalars(select(ExportJob).where(ExportJob.state == "done", ExportJob.expires_at < utcnow()))
    count = 0
    for job in jobs:
        if job.file_path and os.path.exists(job.file_path):
            os.remove(job.file_path)
        job.state, job.file_path = "expired", None
        count += 1
    db.session.commit()
    return count
