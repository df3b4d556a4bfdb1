"""Export jobs (large exports run by the worker) and the append-only log of unmasked personal data."""
import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Integer, String, Text, Uuid, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from gridapp.models.base import Base

EXPORT_STATES = ("queued", "running", "done", "failed", "expired")


class ExportJob(Base):
    """A large export written to a file by an RQ job; downloaded with a signed link until it expires."""

    __tablename__ = "export_jobs"
    __table_args__ = (CheckConstraint("state IN (" + ", ".join(f"'{s}'" for s in EXPORT_STATES) + ")", name="state"),)

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    layer: Mapped[str] = mapped_column(String(20))  # incidents | cells
    format: Mapped[str] = mapped_column(String(20))
    filters: Mapped[dict] = mapped_column(JSONB, default=dict)
    scope_prefix: Mapped[str] = mapped_column(String(12))
    unmasked: Mapped[bool] = mapped_column(default=False)
    state: Mapped[str] = mapped_column(String(10), default="queued")
    rows_total: Mapped[int | None] = mapped_column(Integer)
    rows_done: Mapped[int] = mapped_column(Integer, default=0)
    file_path: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)


class PersonalDataAccess(Base):
    """One look at unmasked personal data: who, why, what. The database refuses UPDATE and DELETE."""

    __tablename__ = "personal_data_access_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    username: Mapped[str] = mapped_column(String(80))
    role: Mapped[str] = mapped_column(String(20))
    purpose: Mapped[str] = mapped_column(String(40))  # export.incidents.csv, export_job, …
    reason: Mapped[str] = mapped_column(Text)
    filters: Mapped[dict] = mapped_column(JSONB, default=dict)
    export_job_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
