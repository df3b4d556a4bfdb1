"""Users, their roles and areas, and API bearer tokens."""
import uuid
from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gridapp.models.area import AdminArea
from gridapp.models.base import Base, TimestampMixin
from gridapp.models.grid import GridCell, grid_cell_workers

# Role keys with their Chinese titles (shown on the dashboard).
ROLES = {
    "grid_worker": "网格员",
    "dispatcher": "指挥中心派遣员",
    "duty_chief": "值班长",
    "squad_member": "执法队员",
    "squad_leader": "中队长",
    "supervisor": "督查员",
    "admin": "管理员",
}
SQUAD_ROLES = ("squad_member", "squad_leader")


class User(TimestampMixin, Base):
    """A person who signs in. `area` bounds everything they may read; grid workers also have cells."""

    __tablename__ = "users"
    __table_args__ = (
        CheckConstraint("role IN (" + ", ".join(f"'{r}'" for r in ROLES) + ")", name="role"),
        CheckConstraint(
            "(role IN ('squad_member', 'squad_leader')) = (squad_id IS NOT NULL)", name="squad_for_squad_roles"
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20))
    area_id: Mapped[int] = mapped_column(ForeignKey("admin_areas.id"), index=True)
    squad_id: Mapped[int | None] = mapped_column(ForeignKey("squads.id"), index=True)
    phone: Mapped[str | None] = mapped_column(String(20))
    password_hash: Mapped[str] = mapped_column(String(255))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # Bumped whenever a grid worker's cells change; phones see it and re-scope (sync protocol).
    scope_epoch: Mapped[int] = mapped_column(Integer, default=1, server_default="1")

    area: Mapped[AdminArea] = relationship()
    squad: Mapped["Squad | None"] = relationship(back_populates="members")  # noqa: F821
    cells: Mapped[list[GridCell]] = relationship(secondary=grid_cell_workers, back_populates="workers")


class ApiToken(TimestampMixin, Base):
    """A bearer token. Only its SHA-256 is stored, so a database leak does not leak live tokens."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # Set for a phone's short-lived access token: the token dies with the device.
    device_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship()
