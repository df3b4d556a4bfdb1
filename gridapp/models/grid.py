"""Unit grid cells (单元网格) and the imports that created them."""
from datetime import datetime

from geoalchemy2 import Geometry
from sqlalchemy import CheckConstraint, Column, DateTime, Float, ForeignKey, Index, String, Table, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gridapp.models.area import AdminArea
from gridapp.models.base import Base, TimestampMixin, utcnow

# Grid workers assigned to a cell (责任网格: the cells one worker patrols).
grid_cell_workers = Table(
    "grid_cell_workers",
    Base.metadata,
    Column("cell_id", ForeignKey("grid_cells.id", ondelete="CASCADE"), primary_key=True),
    Column("user_id", ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class GridImport(TimestampMixin, Base):
    """One accepted grid file: what it was, who imported it and what it changed (留痕)."""

    __tablename__ = "grid_imports"

    id: Mapped[int] = mapped_column(primary_key=True)
    township_id: Mapped[int] = mapped_column(ForeignKey("admin_areas.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    driver: Mapped[str] = mapped_column(String(40))
    source_crs: Mapped[str] = mapped_column(String(255))
    encoding: Mapped[str | None] = mapped_column(String(40))
    imported_by: Mapped[str] = mapped_column(String(80))
    summary: Mapped[dict] = mapped_column(JSONB, default=dict)
    report: Mapped[dict] = mapped_column(JSONB, default=dict)


class GridCell(TimestampMixin, Base):
    """A unit grid cell, versioned: a redrawn cell closes the old row (valid_to) and adds a new one,
    so incidents keep pointing at the polygon that was in force when they were placed."""

    __tablename__ = "grid_cells"
    __table_args__ = (
        CheckConstraint("code ~ '^[0-9]{15}$'", name="code_format"),
        CheckConstraint("GeometryType(geom) IN ('POLYGON', 'MULTIPOLYGON')", name="geom_polygonal"),
        CheckConstraint("valid_to IS NULL OR valid_to > valid_from", name="validity"),
        # At most one current version of a code.
        Index("uq_grid_cells_current_code", "code", unique=True, postgresql_where=text("valid_to IS NULL")),
        # Area scoping filters by code prefix (a township's 9 digits, a county's 6).
        Index("ix_grid_cells_code_prefix", "code", postgresql_ops={"code": "varchar_pattern_ops"}),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(15))
    name: Mapped[str] = mapped_column(String(100))
    village_id: Mapped[int] = mapped_column(ForeignKey("admin_areas.id"), index=True)
    township_id: Mapped[int] = mapped_column(ForeignKey("admin_areas.id"), index=True)
    # POLYGON normally, MULTIPOLYGON only where a cell really has several parts.
    geom = mapped_column(Geometry("GEOMETRY", srid=4326), nullable=False)
    area_m2: Mapped[float] = mapped_column(Float)
    valid_from: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    valid_to: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    import_id: Mapped[int | None] = mapped_column(ForeignKey("grid_imports.id"), index=True)

    grid_import: Mapped[GridImport | None] = relationship()
    village: Mapped[AdminArea] = relationship(foreign_keys=[village_id])
    township: Mapped[AdminArea] = relationship(foreign_keys=[township_id])
    workers: Mapped[list["User"]] = relationship(secondary=grid_cell_workers, back_populates="cells")  # noqa: F821
