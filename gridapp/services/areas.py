"""Administrative areas: lookups within a user's scope, and creation with the nesting rule."""
from sqlalchemy import select

from geo.grid import AREA_CODE_LENGTHS
from gridapp.errors import AreaNotFound, ValidationFailed
from gridapp.extensions import db
from gridapp.models import AdminArea

PARENT_LEVEL = {"township": "county", "village": "township"}


def areas_in_scope(prefix: str, level: str | None = None, parent_code: str | None = None) -> list[AdminArea]:
    """List areas whose code starts with the scope prefix, optionally by level or parent."""
    query = select(AdminArea).where(AdminArea.code.startswith(prefix)).order_by(AdminArea.code)
    if level:
        query = query.where(AdminArea.level == level)
    if parent_code:
        query = query.join(AdminArea.parent.of_type(parent := db.aliased(AdminArea))).where(parent.code == parent_code)
    return list(db.session.scalars(query))


def area_by_code(code: str, prefix: str = "", level: str | None = None) -> AdminArea:
    """Return an area by code, inside a scope prefix.

    :raises AreaNotFound: no such area in scope (or not at the given level).
    """
    area = db.session.scalar(select(AdminArea).where(AdminArea.code == code))
    if area is None or not area.code.startswith(prefix) or (level and area.level != level):
        raise AreaNotFound(code=code)
    return area


def ensure_area(code: str, name: str, level: str, parent: AdminArea | None = None) -> AdminArea:
    """Create an area, or update the name of an existing one with the same code (idempotent).

    :raises ValidationFailed: the code has the wrong length for its level, or does not nest in the parent.
    """
    if len(code) != AREA_CODE_LENGTHS[level] or not code.isdigit():
        raise ValidationFailed(f"A {level} code has {AREA_CODE_LENGTHS[level]} digits.", code=code)
    if level in PARENT_LEVEL:
        if parent is None or parent.level != PARENT_LEVEL[level] or not code.startswith(parent.code):
            raise ValidationFailed(f"A {level} code must start with its {PARENT_LEVEL[level]}'s code.", code=code)
    area = db.session.scalar(select(AdminArea).where(AdminArea.code == code))
    if area is None:
        area = AdminArea(code=code, name=name, level=level, parent=parent)
        db.session.add(area)
    else:
        area.name = name
    db.session.flush()
    return area
