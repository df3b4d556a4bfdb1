"""Event/component catalogue (事项/部件) with 立案/结案 conditions and time limits, as data."""
from sqlalchemy import BigInteger, Boolean, CheckConstraint, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gridapp.models.base import Base, TimestampMixin

CATEGORY_KINDS = {"event": "事项", "component": "部件"}
# 紧急工作时 runs around the clock; 工作时 counts working hours; 工作日 counts working days.
TIME_UNITS = {"urgent_hours": "紧急工作时", "work_hours": "工作时", "work_days": "工作日"}


class Category(TimestampMixin, Base):
    """One 小类. Keyed by (standard, kind, code): 部件 and 事项 reuse the same 5-digit numbers."""

    __tablename__ = "categories"
    __table_args__ = (
        UniqueConstraint("standard", "kind", "code", name="uq_categories_standard_kind_code"),
        CheckConstraint("kind IN ('event', 'component')", name="kind"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    standard: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(10))
    code: Mapped[str] = mapped_column(String(10))
    name: Mapped[str] = mapped_column(String(100))
    major_code: Mapped[str] = mapped_column(String(4))
    major_name: Mapped[str] = mapped_column(String(100))
    is_local_extension: Mapped[bool] = mapped_column(Boolean, default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    # 自动立案: a grid worker's report of this 小类 inside the grid is registered on arrival and routed at
    # once (docs/workflow.md); the others wait in the queue for a dispatcher.
    auto_register: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    # Phones receive the catalogue through sync pull, ordered like every synced row.
    sync_seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)

    conditions: Mapped[list["CategoryCondition"]] = relationship(
        back_populates="category", order_by="CategoryCondition.seq", cascade="all, delete-orphan"
    )


class CategoryCondition(Base):
    """A 立案条件 with its 结案条件 and 处置时限: the time limit lives on the condition, not the 小类."""

    __tablename__ = "category_conditions"
    __table_args__ = (
        UniqueConstraint("category_id", "seq", name="uq_category_conditions_category_seq"),
        CheckConstraint("time_unit IN ('urgent_hours', 'work_hours', 'work_days')", name="time_unit"),
        CheckConstraint("time_limit > 0", name="time_limit_positive"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    register_condition: Mapped[str] = mapped_column(Text)
    close_condition: Mapped[str] = mapped_column(Text)
    time_limit: Mapped[int] = mapped_column(Integer)
    time_unit: Mapped[str] = mapped_column(String(15))

    category: Mapped[Category] = relationship(back_populates="conditions")
