"""Pre-aggregated incident counts for low-zoom map tiles (docs/dashboard.md, "Map")."""
from sqlalchemy import CheckConstraint, ForeignKey, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from gridapp.models.base import Base

# Buckets are the tiles of these zoom levels (zoom 17: about 265 m at 30° N), each counted, so that a
# map tile reads at most 64 × 64 buckets: z >= 11 from 17, z 9-10 from 15, z <= 8 from 12.
BUCKET_ZOOM = 17
BUCKET_LEVELS = (17, 15, 12)
# status class → statuses; `overdue` is any open case the escalation job flagged (overdue_at set).
STATUS_CLASSES = ("new", "open", "overdue", "closed", "void")


class IncidentBucketCount(Base):
    """How many incidents of a township lie in one bucket, per status class. Kept exact by triggers on
    incidents in the same transaction as every insert, status/location change and delete (see the
    migration 6c2d9e8f1a32); `incident_bucket_counts_rebuild()` recomputes it from scratch."""

    __tablename__ = "incident_bucket_counts"
    __table_args__ = (CheckConstraint("status_class IN ('new', 'open', 'overdue', 'closed', 'void')",
                                      name="status_class"),)

    zoom: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    bx: Mapped[int] = mapped_column(Integer, primary_key=True)
    by: Mapped[int] = mapped_column(Integer, primary_key=True)
    township_id: Mapped[int] = mapped_column(ForeignKey("admin_areas.id"), primary_key=True)
    status_class: Mapped[str] = mapped_column(String(8), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)
