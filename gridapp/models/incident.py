"""Incidents (事件) as reported from phones, their notes and their revision history."""
import uuid
from datetime import datetime

from geoalchemy2 import Geometry
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Computed,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gridapp.models.base import Base

# Status names follow the seven-step workflow; the workflow issue adds the transitions.
INCIDENT_STATUSES = ("reported", "verifying", "registered", "invalid", "duplicate", "dispatched", "returned",
                     "handling", "parked", "handled", "checking", "closed")
OPEN_STATUSES = ("reported", "verifying", "registered", "dispatched", "returned", "handling", "parked", "handled",
                 "checking")
# Who owns which field decides three-way merges (docs/sync-protocol.md).
WORKER_FIELDS = ("description", "category", "location")
DISPATCH_FIELDS = ("status", "priority", "assigned_squad")


class Incident(Base):
    """One report. The id is minted by the phone; the server assigns the case number once."""

    __tablename__ = "incidents"
    __table_args__ = (
        CheckConstraint("status IN (" + ", ".join(f"'{s}'" for s in INCIDENT_STATUSES) + ")", name="status"),
        CheckConstraint("version >= 1", name="version_positive"),
        # Pull reads each scoped cell's (and each reporter's) changes in sync order.
        Index("ix_incidents_cell_seq", "cell_id", "sync_seq"),
        Index("ix_incidents_reporter_seq", "reporter_id", "sync_seq"),
        Index("ix_incidents_location_3857", "location_3857", postgresql_using="gist"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    case_number: Mapped[str] = mapped_column(String(24), unique=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    # Stamped at commit by a deferred trigger (see the migration): commit order = sync order.
    sync_seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)

    # Worker-owned fields.
    category_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id"), index=True)
    category_code_raw: Mapped[str] = mapped_column(String(40))
    description: Mapped[str] = mapped_column(Text, default="")
    location = mapped_column(Geometry("POINT", srid=4326), nullable=False)
    # The fix as the phone sent it: {lon, lat, crs}; location is its WGS84 conversion.
    raw_location: Mapped[dict] = mapped_column(JSONB)
    # Web Mercator copy kept by PostgreSQL, with its own GiST index: map tiles read it without a
    # per-row ST_Transform (PERF.md §d: z14 p95 23 ms instead of 64 ms). Deferred: only tiles need it.
    location_3857 = mapped_column(Geometry("POINT", srid=3857, spatial_index=False),
                                  Computed("ST_Transform(location, 3857)", persisted=True), deferred=True)
    gps_accuracy_m: Mapped[float | None] = mapped_column(Float)

    # Derived by the server, never trusted from the phone.
    cell_id: Mapped[int | None] = mapped_column(ForeignKey("grid_cells.id"))
    township_id: Mapped[int] = mapped_column(ForeignKey("admin_areas.id"), index=True)
    is_outside_grid: Mapped[bool] = mapped_column(Boolean, default=False)

    # Dispatch-owned fields.
    status: Mapped[str] = mapped_column(String(20), default="reported")
    priority: Mapped[int | None] = mapped_column(SmallInteger)
    assigned_squad_id: Mapped[int | None] = mapped_column(ForeignKey("squads.id"), index=True)
    voided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    # The workflow (services/workflow.py).
    condition_id: Mapped[int | None] = mapped_column(ForeignKey("category_conditions.id"))  # the 立案条件 used
    due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), index=True)
    paused_work_seconds: Mapped[float | None] = mapped_column(Float)  # what was left when parked
    rework_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    is_self_handled: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    supervision_level: Mapped[int | None] = mapped_column(SmallInteger)  # 督办
    master_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("incidents.id"))  # of a duplicate
    # An open case of the same category close by and recent: shown beside it for the dispatcher to merge.
    likely_duplicate_of: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("incidents.id"))
    task_user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))  # the worker to verify or check
    routed_rule_id: Mapped[int | None] = mapped_column(ForeignKey("responsibility_rules.id", ondelete="SET NULL"))
    is_ownerless: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")  # no rule matched
    warned_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # due-soon warning sent
    overdue_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # escalated as overdue

    # The party (当事人) or complainant, when a worker or dispatcher records one: personal data, shown
    # masked everywhere unless a supervisor states a reason (services/masking.py, docs/exports.md).
    party_name: Mapped[str | None] = mapped_column(String(100))
    party_phone: Mapped[str | None] = mapped_column(String(20))
    party_id_number: Mapped[str | None] = mapped_column(String(18))

    reporter_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    device_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("devices.id"), index=True)
    # Device times are data, never used for ordering.
    created_at_device: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    clock_suspect: Mapped[bool] = mapped_column(Boolean, default=False)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    cell = relationship("GridCell")
    category = relationship("Category")
    reporter = relationship("User", foreign_keys=[reporter_id])
    task_user = relationship("User", foreign_keys=[task_user_id])
    condition = relationship("CategoryCondition")
    squad = relationship("Squad")
    notes: Mapped[list["IncidentNote"]] = relationship(back_populates="incident", order_by="IncidentNote.created_at")
    photos = relationship("IncidentPhoto", order_by="IncidentPhoto.created_at", viewonly=True)


class IncidentNote(Base):
    """An add-only note: notes never conflict, they accumulate."""

    __tablename__ = "incident_notes"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    incident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("incidents.id"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    text: Mapped[str] = mapped_column(Text)
    created_at_device: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sync_seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)

    incident: Mapped[Incident] = relationship(back_populates="notes")
    author = relationship("User")


class IncidentRevision(Base):
    """Every accepted change, with the values it replaced: nothing a merge overrides is lost."""

    __tablename__ = "incident_revisions"

    # Deferrable: the set-based push writes revisions before their incidents (sync/bulk.py).
    incident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("incidents.id", deferrable=True, initially="IMMEDIATE"),
                                                   primary_key=True)
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    mutation_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    source: Mapped[str] = mapped_column(String(20))  # device | dispatch | review
    actor_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    # {field: {"from": old, "to": new}}; losing values of a merge are here too.
    changes: Mapped[dict] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class CaseNumberCounter(Base):
    """Per county and day, the last case-number sequence handed out (案卷号 = county + date + seq)."""

    __tablename__ = "case_number_counters"

    county_code: Mapped[str] = mapped_column(String(6), primary_key=True)
    day: Mapped[str] = mapped_column(String(8), primary_key=True)
    last: Mapped[int] = mapped_column(Integer, default=0)
