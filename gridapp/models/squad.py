"""The township's comprehensive law-enforcement team (综合行政执法队) and its squads (中队)."""
from sqlalchemy import Column, ForeignKey, String, Table, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gridapp.models.area import AdminArea
from gridapp.models.base import Base, TimestampMixin

# Areas (villages or whole townships) a squad covers.
squad_areas = Table(
    "squad_areas",
    Base.metadata,
    Column("squad_id", ForeignKey("squads.id", ondelete="CASCADE"), primary_key=True),
    Column("area_id", ForeignKey("admin_areas.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class EnforcementTeam(TimestampMixin, Base):
    """One team per township ("一支队伍管执法")."""

    __tablename__ = "enforcement_teams"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    township_id: Mapped[int] = mapped_column(ForeignKey("admin_areas.id"), unique=True)

    township: Mapped[AdminArea] = relationship()
    squads: Mapped[list["Squad"]] = relationship(back_populates="team", order_by="Squad.code")


class Squad(TimestampMixin, Base):
    """A squad (中队) of a team, covering some of the township's areas."""

    __tablename__ = "squads"
    __table_args__ = (UniqueConstraint("team_id", "code", name="uq_squads_team_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("enforcement_teams.id", ondelete="CASCADE"), index=True)
    code: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(100))
    # Where dispatches are announced (JSON POST, signed with HMAC-SHA256 of the secret).
    webhook_url: Mapped[str | None] = mapped_column(String(500))
    webhook_secret: Mapped[str | None] = mapped_column(String(100))

    team: Mapped[EnforcementTeam] = relationship(back_populates="squads")
    areas: Mapped[list[AdminArea]] = relationship(secondary=squad_areas, order_by="AdminArea.code")
    members: Mapped[list["User"]] = relationship(back_populates="squad")  # noqa: F821
