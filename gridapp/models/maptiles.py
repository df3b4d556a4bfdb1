"""Pre-aggregated incident counts for low-zoom map tiles (docs/dashboard.md, "Map")."""
from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Identity, Index, Integer, SmallInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from gridapp.models.base import Base

# Buckets are the tiles of these zoom levels (zoom 17: about 265 m at 30° N), each counted, so that a
# map tile reads at most 64 × 64 buckets: z >= 11 from 17, z 9-10 from 15, z <= 8 from 12.
BUCKET_ZOOM = 17
BUCKET_LEVELS = (17, 15, 12)
# status class → statuses; `overdue` is any open case the escalation job flagged (overdue_at set).
STATUS_CLASSES = ("new", "open", "overdue", "closed", "void")


class IncidentBucketCount(Base):
    """How many incidents of a township lie in one bucket, per status class, up to the last fold: the
    exact count is this plus the bucket's rows in IncidentBucketDelta. `incident_bucket_counts_fold()`
    moves the deltas in (a periodic job); `incident_bucket_counts_rebuild()` recomputes everything."""

    __tablename__ = "incident_bucket_counts"
    __table_args__ = (CheckConstraint("status_class IN ('new', 'open', 'overdue', 'closed', 'void')",
                                      name="status_class"),)

    zoom: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    bx: Mapped[int] = mapped_column(Integer, primary_key=True)
    by: Mapped[int] = mapped_column(Integer, primary_key=True)
    township_id: Mapped[int] = mapped_column(ForeignKey("admin_areas.id"), primary_key=True)
    status_class: Mapped[str] = mapped_column(String(8), primary_key=True)
    n: Mapped[int] = mapped_column(Integer, default=0)


class IncidentBucketDelta(Base):
    """A signed change to a bucket's count, appended by triggers on incidents in the same transaction as
    every insert, status/location change and delete (migration 6c2d9e8f1a32). Insert-only, so writers
    never wait on each other the way they would updating a shared counter row."""

    __tablename__ = "incident_bucket_deltas"
    __table_args__ = (Index("ix_incident_bucket_deltas_place", "zoom", "bx", "by"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    zoom: Mapped[int] = mapped_column(SmallInteger)
    bx: Mapped[int] = mapped_column(Integer)
    by: Mapped[int] = mapped_column(Integer)
    township_id: Mapped[int] = mapped_column(Integer)  # no foreign key: nothing to check on the hot path
    status_class: Mapped[str] = mapped_column(String(8))
    n: Mapped[int] = mapped_column(Integer)
