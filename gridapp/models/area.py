"""Administrative hierarchy: county (区县) → township/street (乡镇/街道) → village/community (村/社区)."""
from geoalchemy2 import Geometry
from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gridapp.models.base import Base, TimestampMixin

AREA_LEVELS = ("county", "township", "village")


class AdminArea(TimestampMixin, Base):
    """One administrative area. Codes are strings (leading zeros matter) and nest by prefix:
    a township's 9-digit code starts with its county's 6 digits, a village's 12 with its township's 9,
    and a grid cell's 15-digit code with its village's 12. Area scoping relies on that nesting."""

    __tablename__ = "admin_areas"
    __table_args__ = (
        CheckConstraint("level IN ('county', 'township', 'village')", name="level"),
        CheckConstraint(
            "(level = 'county' AND code ~ '^[0-9]{6}$') OR (level = 'township' AND code ~ '^[0-9]{9}$')"
            " OR (level = 'village' AND code ~ '^[0-9]{12}$')",
            name="code_format",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(12), unique=True)
    # GB/T 2260 for counties, 统计用区划代码 for townships and villages; kept so codes can be re-based.
    code_system: Mapped[str] = mapped_column(String(20), default="stats")
    name: Mapped[str] = mapped_column(String(100))
    level: Mapped[str] = mapped_column(String(10))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("admin_areas.id"), index=True)
    # Optional outline; when present the grid import checks cells against it.
    boundary = mapped_column(Geometry("MULTIPOLYGON", srid=4326), nullable=True)

    parent: Mapped["AdminArea | None"] = relationship(remote_side=[id])
