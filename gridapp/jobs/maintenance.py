"""Housekeeping jobs run by the scheduler."""
import logging

from gridapp.extensions import db
from gridapp.services.auth import purge_expired_tokens

log = logging.getLogger(__name__)


def purge_tokens() -> int:
    """Delete long-expired bearer tokens. Safe to run twice."""
    count = purge_expired_tokens()
    db.session.commit()
    log.info("purged %d expired tokens", count)
    return count
