"""Photos: content-addressed blobs, resumable (tus) uploads in progress, and the photos an incident declares."""
import uuid
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gridapp.models.base import Base

# The photo types of a case as the domain uses them (DOMAIN.md §2: 上报, 处置前, 处置后, 核查).
PHOTO_TYPES = ("report", "before_handling", "after_handling", "check")


class PhotoBlob(Base):
    """One stored original, keyed by the SHA-256 of its bytes: verified, decoded once, never changed."""

    __tablename__ = "photo_blobs"
    __table_args__ = (CheckConstraint("sha256 ~ '^[0-9a-f]{64}$'", name="sha256_hex"),)

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    mime: Mapped[str] = mapped_column(String(40))  # decided by sniffing and decoding the bytes
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Set by the derive job once the display image and the thumbnail exist.
    derived_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    display_size: Mapped[int | None] = mapped_column(BigInteger)
    thumbnail_size: Mapped[int | None] = mapped_column(BigInteger)


class PhotoUpload(Base):
    """A tus upload in progress. Its bytes are stored as parts (one per accepted PATCH) until the last one."""

    __tablename__ = "photo_uploads"
    __table_args__ = (
        # A retried creation by the same uploader returns the same upload (idempotent POST).
        UniqueConstraint("uploader", "sha256", name="uq_photo_uploads_uploader_sha256"),
        CheckConstraint('"offset" >= 0 AND "offset" <= length', name="offset_in_range"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    uploader: Mapped[str] = mapped_column(String(60))  # "device:<uuid>" for phones, "user:<id>" otherwise
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    length: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    # [[offset, length, storage key], ...] in order; the offset check in the UPDATE keeps them contiguous.
    parts: Mapped[list] = mapped_column(JSONB, default=list)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class IncidentPhoto(Base):
    """A photo an incident declares (by hash), bound to its blob once the bytes are verified. Immutable."""

    __tablename__ = "incident_photos"
    __table_args__ = (
        CheckConstraint("photo_type IN (" + ", ".join(f"'{t}'" for t in PHOTO_TYPES) + ")", name="photo_type"),
        CheckConstraint("blob_sha256 IS NULL OR blob_sha256 = sha256", name="bound_to_declared"),
        # Binding finds every declaration of a hash; the missing list finds a user's unbound ones.
        Index("ix_incident_photos_sha256", "sha256"),
        Index("ix_incident_photos_missing", "declared_by_id", postgresql_where="blob_sha256 IS NULL"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)  # attachment_id, minted by the phone
    incident_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("incidents.id"), index=True)
    photo_type: Mapped[str] = mapped_column(String(20))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    mime: Mapped[str | None] = mapped_column(String(40))  # as the phone claimed it; the blob's is decided
    blob_sha256: Mapped[str | None] = mapped_column(ForeignKey("photo_blobs.sha256"))
    # Why the bytes for this hash were refused (photo.not_an_image, photo.invalid_image, photo.too_many_pixels).
    problem: Mapped[str | None] = mapped_column(String(40))
    declared_by_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    device_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("devices.id"))
    event_id: Mapped[int | None] = mapped_column(ForeignKey("incident_events.id"))  # a workflow action's photo
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    bound_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    blob = relationship("PhotoBlob")
    declared_by = relationship("User")
