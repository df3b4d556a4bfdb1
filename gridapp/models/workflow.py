"""The case workflow's records: append-only events (留痕), requests awaiting the duty chief, the
responsibility list (权责清单), the outbox of background work, notifications and the work calendar."""
import uuid
from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gridapp.models.base import Base


class IncidentEvent(Base):
    """One step of a case: who (and in which role), when, from which status to which, why. Never updated."""

    __tablename__ = "incident_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("incidents.id"), index=True)
    action: Mapped[str] = mapped_column(String(40))  # incident.register, incident.dispatch, …
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # None: the system (a job)
    actor_role: Mapped[str] = mapped_column(String(20))
    from_status: Mapped[str] = mapped_column(String(20))
    to_status: Mapped[str] = mapped_column(String(20))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    actor = relationship("User")
    # The background work this step wrote (routing after registration, notifying after dispatch).
    outbox: Mapped[list["OutboxMessage"]] = relationship()


class CaseRequest(Base):
    """An extension (延期) or parking (挂账) request from a squad, decided by the duty chief."""

    __tablename__ = "case_requests"
    __table_args__ = (
        CheckConstraint("kind IN ('extension', 'park')", name="kind"),
        CheckConstraint("state IN ('pending', 'approved', 'rejected')", name="state"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("incidents.id"), index=True)
    kind: Mapped[str] = mapped_column(String(10))
    amount: Mapped[float | None] = mapped_column(Float)  # extension, in the case's time unit
    reason: Mapped[str] = mapped_column(Text)
    requested_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    state: Mapped[str] = mapped_column(String(10), default="pending")
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decision_reason: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ResponsibilityRule(Base):
    """权责清单: which squad handles a category (or any) in an area (township, village) or one cell.

    The most specific area wins (cell, then village, then township), then the lower priority number;
    a fallback rule (属地兜底) matches any category of its township and only when nothing else does."""

    __tablename__ = "responsibility_rules"
    __table_args__ = (CheckConstraint("(area_id IS NULL) <> (cell_code IS NULL)", name="one_place"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    category_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id"), index=True)
    area_id: Mapped[int | None] = mapped_column(ForeignKey("admin_areas.id"), index=True)
    cell_code: Mapped[str | None] = mapped_column(String(15), index=True)
    squad_id: Mapped[int] = mapped_column(ForeignKey("squads.id"))
    priority: Mapped[int] = mapped_column(Integer, default=100)
    is_fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    auto_dispatch: Mapped[bool] = mapped_column(Boolean, default=False)
    note: Mapped[str | None] = mapped_column(Text)

    squad = relationship("Squad")
    area = relationship("AdminArea")
    category = relationship("Category")


class OutboxMessage(Base):
    """Background work written in the same transaction as the change that needs it; a job runs it
    after commit, and a sweeper re-enqueues what was never run (Redis down, worker killed)."""

    __tablename__ = "outbox_messages"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(40))  # route | notify | …
    incident_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("incidents.id"), index=True)
    event_id: Mapped[int | None] = mapped_column(ForeignKey("incident_events.id"))
    payload: Mapped[dict] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)

    incident = relationship("Incident")


class Notification(Base):
    """One message to a squad's channel (a webhook), delivered at least once and recognised by its
    idempotency key, so the receiver acts on it once. Final failures are dead letters to retry by hand."""

    __tablename__ = "notifications"
    __table_args__ = (CheckConstraint("state IN ('pending', 'sent', 'dead')", name="state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str] = mapped_column(String(80), unique=True)
    squad_id: Mapped[int] = mapped_column(ForeignKey("squads.id"), index=True)
    incident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("incidents.id"), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    body: Mapped[dict] = mapped_column(JSONB)
    state: Mapped[str] = mapped_column(String(10), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The last time a delivery job was started or enqueued: the sweeper re-enqueues what went quiet.
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    squad = relationship("Squad")


class CalendarDay(Base):
    """A local exception to the national calendar: a day worked, or a day off (imported per year)."""

    __tablename__ = "calendar_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    is_workday: Mapped[bool] = mapped_column(Boolean)
    note: Mapped[str | None] = mapped_column(Text)
