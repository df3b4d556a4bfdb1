"""Export jobs: large exports written by the worker, and the cleanup of expired files."""
import logging

from gridapp.services import export_jobs

log = logging.getLogger(__name__)

EXPORT_TIMEOUT_SECONDS = 3600  # a million rows to GeoPackage takes minutes, not hours


def run_export(job_id: str) -> int:
    count = export_jobs.run_job(job_id)
    log.info("export %s wrote %d rows", job_id, count)
    return count


def purge_exports() -> int:
    count = export_jobs.purge_expired()
    log.info("purged %d expired exports", count)
    return count
