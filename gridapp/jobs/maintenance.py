"""Housekeeping jobs run by the scheduler."""
import logging

from gridapp.extensions import db
from gridapp.services.auth import purge_expired_tokens
from gridapp.services.maptiles import fold_bucket_deltas

log = logging.getLogger(__name__)


def purge_tokens() -> int:
    """Delete long-expired bearer tokens. Safe to run twice."""
    count = purge_expired_tokens()
    db.session.commit()
    log.info("purged %d expired tokens", count)
    return count


def fold_map_counts() -> int:
    """Fold the map's pending count deltas into the counts (tiles are exact either way; this keeps the
    delta table small). Safe to run twice or concurrently: a delta is deleted by the fold that counts it."""
    folded = fold_bucket_deltas()
    db.session.commit()
    return folded
