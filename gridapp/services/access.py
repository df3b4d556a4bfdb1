"""Who may do what, and where: the role matrix and the area scope.

Two rules, checked on every endpoint:
- by role: each permission lists the roles that hold it (403 `auth.forbidden` otherwise);
- by area: a user reads only objects whose area code starts with their own area's code. Anything
  outside is answered exactly like something that does not exist (404), so ids cannot be probed.
"""
import uuid
from dataclasses import dataclass
from datetime import datetime

from gridapp.models import ROLES, User

ALL_ROLES = frozenset(ROLES)
STAFF = ALL_ROLES - {"grid_worker"}

PERMISSIONS: dict[str, frozenset[str]] = {
    # The grid, the areas, the categories and the squads are reference data every role needs.
    "grid.read": ALL_ROLES,
    "area.read": ALL_ROLES,
    "category.read": ALL_ROLES,
    "squad.read": ALL_ROLES,
    # The list of users (with phone numbers) is for the people who run the deployment.
    "user.read": frozenset({"admin", "duty_chief"}),
    # Phones: grid workers push and pull with a device token.
    "sync.push": frozenset({"grid_worker"}),
    "sync.pull": frozenset({"grid_worker"}),
    # Incidents as reported, and what sync could not apply, for the dispatch centre.
    "incident.read": STAFF,
    # Workflow actions; each action then checks its own roles (services/workflow.py).
    "incident.act": frozenset({"grid_worker", "dispatcher", "duty_chief", "squad_member", "squad_leader"}),
    "sync.review": frozenset({"dispatcher", "duty_chief", "admin"}),
    "device.read": frozenset({"dispatcher", "duty_chief", "admin"}),
    # The dispatch centre's tools: the responsibility list, routing explanations, dead letters.
    "dispatch.manage": frozenset({"dispatcher", "duty_chief", "admin"}),
    "device.manage": frozenset({"duty_chief", "admin"}),
    # Photos: phones and squads upload (tus); everyone reads the photos of incidents in their area.
    "photo.upload": frozenset({"grid_worker", "squad_member", "squad_leader"}),
    "photo.read": ALL_ROLES,
    # Exports, the evaluation, the OGC API and early warnings (issue 7; docs/exports.md).
    "export.read": frozenset({"dispatcher", "duty_chief", "supervisor", "admin"}),
    # Citizens' personal data unmasked (with a reason, logged): supervisors and admins only.
    "personal_data.unmask": frozenset({"supervisor", "admin"}),
    "evaluation.read": frozenset({"dispatcher", "duty_chief", "squad_leader", "supervisor", "admin"}),
    "ogc.read": STAFF,
    "warning.read": STAFF,
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is asking, as authorization needs it: the API reads it with one small query per request
    (services/auth.principal_for_token) instead of loading the User, its token and its area. A phone's
    token brings its device's state too, so a sync push needs no other read to know who pushes."""

    user_id: int
    token_id: int
    role: str
    area_code: str
    area_id: int | None = None
    device_id: uuid.UUID | None = None  # a phone's token: its device (sync.devices.check_device)
    device_state: str | None = None
    device_seen_at: datetime | None = None  # when the device's clock was last recorded (sync.devices.record_clock)
    device_clock_offset_ms: int | None = None
    is_active = True  # only an active user's token gives a principal


def can(user: User | Principal, permission: str) -> bool:
    """Tell whether the user's role holds a permission."""
    return user.is_active and user.role in PERMISSIONS[permission]


def scope_prefix(user: User | Principal) -> str:
    """Return the area-code prefix that bounds what the user may read (county 6, township 9 digits)."""
    return user.area_code if isinstance(user, Principal) else user.area.code


def in_scope(user: User | Principal, code: str) -> bool:
    """Tell whether an area or cell code lies inside the user's area."""
    return code.startswith(scope_prefix(user))
