"""Pre-aggregated incident counts for low-zoom map tiles (docs/dashboard.md, "Map")."""
from sqlalchemy import CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gridapp.models.base import Base

# Buckets are the tiles of this zoom level (about 300 m at 30° N); lower zooms group them.
BUCKET_ZOOM = 17
# status class → statuses; `overdue` is any open case the escalation job flagged (overdue_at set).
STATUS_CLASSES = ("new", "open", "overdue", "closed", "void")


class IncidentBucketCount(Base):
    """How many incidents of a township lie in one bucket, per status class. Kept exact by triggers on
    incidents in the same transaction as every insert, status/location change and delete (see the
    migration 6c2d9e8f1a32); `incident_bucket_counts_rebuild()` recomputes it from scratch."""

    __tablename__ = "incident_bucket_counts"
    __table_args__ = (CheckConstraint("status_class IN ('new', 'open', 'overdue', 'closed', 'void')",
                                      name="status_class"),)

    bx: Mapped[int] = mapped_column(Integer, primary_key=True)
    by: Mapped[int] = mapped_column(Integer, primary_key=True)
    township_id: Mapped[int] = mapped_column(ForeignKey("admin_areas.id"), primary_key=True)
    status_class: Mapped[str] = mapped_column(String(8), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)
