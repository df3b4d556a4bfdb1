"""Photo jobs: derive the display image and thumbnail of a new blob; collect expired uploads and orphans."""
import logging

from sqlalchemy import select

from gridapp.extensions import db
from gridapp.jobs import enqueue
from gridapp.models import PhotoBlob
from gridapp.services import photos

log = logging.getLogger(__name__)


def derive_photo(sha256: str) -> str:
    """Make a blob's display image and thumbnail (idempotent: a second run finds them made)."""
    outcome = photos.derive(sha256)
    log.info("derive %s: %s", sha256, outcome)
    return outcome


def collect_photos() -> dict:
    """Collect expired uploads and orphan blobs; re-enqueue derivations that never ran (Redis was down)."""
    counts = photos.collect_garbage()
    pending = db.session.scalars(select(PhotoBlob.sha256).where(PhotoBlob.derived_at.is_(None)).limit(1000)).all()
    db.session.commit()
    for sha256 in pending:
        enqueue(derive_photo, sha256, job_id=f"derive-{sha256}")
    log.info("photo collection: %s, %d derivations re-enqueued", counts, len(pending))
    return {**counts, "derive_enqueued": len(pending)}
