"""User accounts: creation (CLI and demo data), listing within an area."""
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from gridapp.errors import Conflict, ValidationFailed
from gridapp.extensions import db
from gridapp.models import ROLES, SQUAD_ROLES, AdminArea, GridCell, Squad, User
from gridapp.services.passwords import hash_password
from gridapp.services.scope import refresh_scope

MIN_PASSWORD_LENGTH = 8


def create_user(username: str, role: str, area: AdminArea, password: str, *, display_name: str | None = None,
                squad: Squad | None = None, phone: str | None = None) -> User:
    """Create a user.

    :raises ValidationFailed: unknown role, short password, or a squad missing/present against the role.
    :raises Conflict: the username is taken.
    """
    _check(role, area, password, squad)
    if db.session.scalar(select(User.id).where(User.username == username)) is not None:
        raise Conflict("This username is taken.", username=username)
    user = User(username=username, role=role, area=area, squad=squad, phone=phone,
                display_name=display_name or username, password_hash=hash_password(password))
    db.session.add(user)
    db.session.flush()
    return user


def _check(role: str, area: AdminArea, password: str, squad: Squad | None) -> None:
    if role not in ROLES:
        raise ValidationFailed(f"Unknown role; use one of {', '.join(ROLES)}.", role=role)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValidationFailed(f"A password has at least {MIN_PASSWORD_LENGTH} characters.")
    if area.level == "village":
        raise ValidationFailed("Users are scoped to a county or a township, not a village.", area=area.code)
    if (role in SQUAD_ROLES) != (squad is not None):
        raise ValidationFailed("Squad members and leaders, and only they, belong to a squad.", role=role)
    if role == "grid_worker" and area.level != "township":
        raise ValidationFailed("A grid worker is scoped to one township.", area=area.code)
    if squad is not None and not squad.team.township.code.startswith(area.code):
        raise ValidationFailed("The squad's township lies outside the user's area.", area=area.code)


def assign_cells(user: User, cells: list[GridCell]) -> None:
    """Make these the grid worker's cells (责任网格).

    :raises ValidationFailed: the user is not a grid worker, or a cell is outside their township.
    """
    if user.role != "grid_worker":
        raise ValidationFailed("Only grid workers are assigned cells.", username=user.username)
    outside = [c.code for c in cells if not c.code.startswith(user.area.code)]
    if outside:
        raise ValidationFailed("Cells outside the worker's township.", cells=outside)
    user.cells = cells
    db.session.flush()
    refresh_scope(user)


def users_in_scope(prefix: str, role: str | None = None) -> list[User]:
    """List users whose area lies inside a scope."""
    query = (select(User).join(User.area).where(AdminArea.code.startswith(prefix))
             .options(selectinload(User.cells), selectinload(User.squad)).order_by(User.username))
    if role:
        query = query.where(User.role == role)
    return list(db.session.scalars(query))
