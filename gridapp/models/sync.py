"""Offline sync: devices and their tokens, push receipts, quarantine, conflicts, scope history."""
import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gridapp.models.base import Base, TimestampMixin

DEVICE_STATES = ("active", "draining", "revoked")


class SyncCounter(Base):
    """The single-row counter behind sync_seq; its row lock is held from stamping to commit."""

    __tablename__ = "sync_counter"
    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, default=0)


class Device(TimestampMixin, Base):
    """One app install of one user: active → draining → revoked."""

    __tablename__ = "devices"
    __table_args__ = (
        CheckConstraint("state IN ('active', 'draining', 'revoked')", name="state"),
        UniqueConstraint("user_id", "install_id", name="uq_devices_user_install"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    install_id: Mapped[str] = mapped_column(String(64))
    platform: Mapped[str] = mapped_column(String(40), default="")
    app_version: Mapped[str] = mapped_column(String(40), default="")
    state: Mapped[str] = mapped_column(String(10), default="active")
    state_reason: Mapped[str | None] = mapped_column(Text)
    # What the device has acknowledged by presenting a cursor (delivery receipts for dispatch).
    last_ack_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    clock_offset_ms: Mapped[int | None] = mapped_column(BigInteger)
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user = relationship("User")


class DeviceRefreshToken(TimestampMixin, Base):
    """Single-use refresh tokens. A family is one chain of rotations; reusing a spent token revokes the device."""

    __tablename__ = "device_refresh_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    device_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SyncReceipt(Base):
    """The outcome of one mutation, written in the same transaction as its effect (exactly once)."""

    __tablename__ = "sync_receipts"
    __table_args__ = (UniqueConstraint("device_id", "device_seq", name="uq_sync_receipts_device_seq"),)

    mutation_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    device_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("devices.id"), index=True)
    device_seq: Mapped[int] = mapped_column(BigInteger)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    request_sha256: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(20))
    result: Mapped[dict] = mapped_column(JSONB)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class QuarantineItem(Base):
    """A mutation that could not be applied, kept whole for a dispatcher to apply, edit or discard."""

    __tablename__ = "sync_quarantine"
    __table_args__ = (CheckConstraint("state IN ('open', 'applied', 'discarded')", name="state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    mutation_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    device_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("devices.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    # The township the item belongs to, for the dispatcher's area rule (the reporter's when unknown).
    township_id: Mapped[int] = mapped_column(ForeignKey("admin_areas.id"), index=True)
    incident_id: Mapped[uuid.UUID | None] = mapped_column(Uuid, index=True)
    payload: Mapped[dict] = mapped_column(JSONB)
    # Replays of the same refused body find this row instead of adding another.
    payload_sha256: Mapped[str] = mapped_column(String(64), index=True)
    code: Mapped[str] = mapped_column(String(40))
    detail: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(10), default="open")
    resolved_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    resolution_reason: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())

    user = relationship("User", foreign_keys=[user_id])


class SyncDeferral(Base):
    """When an update or note for an unknown incident was first seen: it is retried, then quarantined."""

    __tablename__ = "sync_deferrals"

    mutation_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    first_seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SyncConflict(Base):
    """A field both sides changed differently; the losing value is kept here and in the revisions."""

    __tablename__ = "sync_conflicts"
    __table_args__ = (CheckConstraint("state IN ('needs_review', 'resolved')", name="state"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("incidents.id"), index=True)
    field: Mapped[str] = mapped_column(String(40))
    base_value = mapped_column(JSONB)
    server_value = mapped_column(JSONB)
    client_value = mapped_column(JSONB)
    resolution: Mapped[str] = mapped_column(String(30))  # client_applied | server_kept | edit_after_void
    mutation_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    state: Mapped[str] = mapped_column(String(15), default="needs_review")
    resolved_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    resolution_reason: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ScopeExit(Base):
    """An incident left a cell (its location moved): phones that see the old cell and not the new evict it."""

    __tablename__ = "sync_scope_exits"

    id: Mapped[int] = mapped_column(primary_key=True)
    incident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("incidents.id"), index=True)
    old_cell_code: Mapped[str | None] = mapped_column(String(15))
    new_cell_code: Mapped[str | None] = mapped_column(String(15))
    sync_seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)


class WorkerScope(Base):
    """The cell codes a grid worker had at each scope epoch (a reassignment starts a new epoch)."""

    __tablename__ = "worker_scopes"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    epoch: Mapped[int] = mapped_column(Integer, primary_key=True)
    cell_codes: Mapped[list[str]] = mapped_column(ARRAY(String(15)))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class AuditEvent(Base):
    """Append-only audit trail (留痕) of actions outside the incident workflow: who, what, when, why."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(primary_key=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), index=True)
    action: Mapped[str] = mapped_column(String(60))
    object_type: Mapped[str] = mapped_column(String(40))
    object_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict] = mapped_column(JSONB, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
