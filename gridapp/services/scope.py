"""A grid worker's sync scope: the cell codes they hold, versioned by epoch so phones can re-scope."""
from datetime import timedelta

from sqlalchemy import select

from gridapp.extensions import db
from gridapp.models import User, WorkerScope, utcnow


def current_scope(user: User) -> tuple[int, frozenset[str]]:
    """Return the user's scope epoch and the cell codes it covers (empty before any assignment)."""
    row = db.session.get(WorkerScope, (user.id, user.scope_epoch))
    return user.scope_epoch, frozenset(row.cell_codes if row else ())


def scope_at(user_id: int, epoch: int) -> frozenset[str]:
    """Return the cell codes a user held at an epoch (empty if unknown)."""
    row = db.session.get(WorkerScope, (user_id, epoch))
    return frozenset(row.cell_codes if row else ())


def refresh_scope(user: User) -> bool:
    """Start a new epoch if the user's current cells differ from their scope; return whether it changed."""
    codes = frozenset(c.code for c in user.cells if c.valid_to is None)
    _, scoped = current_scope(user)
    if codes == scoped:
        return False
    user.scope_epoch += 1
    db.session.add(WorkerScope(user_id=user.id, epoch=user.scope_epoch, cell_codes=sorted(codes)))
    db.session.flush()
    return True


def codes_within_grace(user: User, grace: timedelta) -> frozenset[str]:
    """Return cell codes the user held in any epoch that ended less than `grace` ago (pending work is accepted)."""
    since = utcnow() - grace
    rows = db.session.scalars(
        select(WorkerScope).where(WorkerScope.user_id == user.id).order_by(WorkerScope.epoch)
    ).all()
    codes: set[str] = set()
    for previous, following in zip(rows, rows[1:]):
        if following.created_at >= since:
            codes.update(previous.cell_codes)
    return frozenset(codes)
