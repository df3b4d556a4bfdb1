"""Incidents as reported: placing them in their cell, case numbers, field changes with history, notes."""
import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

from flask import current_app
from geoalchemy2.shape import from_shape
from shapely.geometry import Point
from sqlalchemy import select, text

import geo.crs
from gridapp.errors import Forbidden, IncidentNotFound
from gridapp.extensions import db
from gridapp.models import (
    OPEN_STATUSES,
    AdminArea,
    Category,
    Device,
    Incident,
    IncidentEvent,
    IncidentNote,
    IncidentRevision,
    ScopeExit,
    User,
    utcnow,
)
from gridapp.services.grids import cell_at

CASE_NUMBER_TZ = ZoneInfo("Asia/Shanghai")
DEFAULT_STANDARD = "GB/T 47678.5-2026"


def next_case_number(county_code: str, when: datetime) -> str:
    """Hand out the next 案卷号 for a county: 6-digit county + Shanghai date + 5-digit daily sequence."""
    day = when.astimezone(CASE_NUMBER_TZ).strftime("%Y%m%d")
    last = db.session.execute(text("""
        INSERT INTO case_number_counters (county_code, day, last) VALUES (:county, :day, 1)
        ON CONFLICT (county_code, day) DO UPDATE SET last = case_number_counters.last + 1
        RETURNING last"""), {"county": county_code, "day": day}).scalar_one()
    return f"{county_code}{day}{last:05d}"


def category_for_code(code: str) -> Category | None:
    """Return the active event category of the default standard with this code, or None."""
    return db.session.scalar(select(Category).where(
        Category.standard == DEFAULT_STANDARD, Category.kind == "event", Category.code == code, Category.is_active))


def place(location: dict):
    """Convert a phone's {lon, lat, crs} to WGS84 and find its cell.

    :returns: (shapely Point in WGS84, cell row or None).
    :raises OutsideChina: a gcj02/bd09 point outside China.
    """
    lon, lat = geo.crs.to_wgs84(location["lon"], location["lat"], location.get("crs", "wgs84"))
    return Point(lon, lat), cell_at(lon, lat)


def create_incident(*, incident_id: uuid.UUID, reporter: User, device: Device | None, category_code: str,
                    description: str, location: dict, gps_accuracy_m: float | None,
                    created_at_device: datetime | None, clock_suspect: bool, mutation_id: uuid.UUID | None,
                    township_id: int, party: dict | None = None) -> Incident:
    """Create a reported incident placed by the database; a point outside every cell is kept and flagged.

    `township_id` is used only when the point is in no cell (the reporter's township).
    """
    point, cell = place(location)
    category = category_for_code(category_code)
    now = utcnow()
    township = cell.township_id if cell else township_id
    county_code = db.session.execute(text("SELECT left(code, 6) FROM admin_areas WHERE id = :id"),
                                     {"id": township}).scalar_one()
    incident = Incident(
        id=incident_id, case_number=next_case_number(county_code, now), version=1,
        category_id=category.id if category else None, category_code_raw=category_code,
        description=description, location=from_shape(point, srid=geo.crs.STORAGE_SRID), raw_location=location,
        gps_accuracy_m=gps_accuracy_m, cell_id=cell.id if cell else None, township_id=township,
        is_outside_grid=cell is None, status="reported", reporter_id=reporter.id,
        device_id=device.id if device else None, created_at_device=created_at_device, clock_suspect=clock_suspect,
    )
    set_party(incident, party or {})
    db.session.add(incident)
    db.session.flush()
    incident.likely_duplicate_of = likely_duplicate(incident)
    db.session.add(IncidentRevision(
        incident_id=incident.id, version=1, mutation_id=mutation_id, source="device", actor_id=reporter.id,
        changes={"created": {"to": field_values(incident)}},
    ))
    return incident


_DUPLICATE_SQL = text("""
SELECT o.id FROM incidents o, incidents n
WHERE n.id = :id AND o.id <> n.id AND o.category_code_raw = n.category_code_raw
  AND o.status = ANY(:open) AND o.received_at >= n.received_at - make_interval(hours => :hours)
  AND ST_DWithin(o.location, n.location, :degrees)  -- index prefilter, then the exact distance
  AND ST_DWithin(o.location::geography, n.location::geography, :metres)
ORDER BY ST_Distance(o.location::geography, n.location::geography), o.received_at
LIMIT 1
""")


def likely_duplicate(incident: Incident) -> uuid.UUID | None:
    """Find an open case of the same category within the configured distance and time window."""
    metres = current_app.config["DUPLICATE_DISTANCE_M"]
    return db.session.execute(_DUPLICATE_SQL, {
        "id": incident.id, "open": list(OPEN_STATUSES), "hours": current_app.config["DUPLICATE_WINDOW_HOURS"],
        # The prefilter box: a degree of longitude is over 50 km below latitude 63° (all of China).
        "metres": metres, "degrees": metres / 50_000,
    }).scalar()


def lock_incident(incident_id: uuid.UUID) -> Incident | None:
    """Load an incident locked against concurrent changes (merges, workflow steps).

    FOR NO KEY UPDATE, not FOR UPDATE: it still serialises writers, but lets other transactions check
    foreign keys that point at this case (a likely duplicate, a master case) without waiting, which
    would otherwise deadlock against the commit-time sync_seq stamping.
    """
    return db.session.scalar(select(Incident).where(Incident.id == incident_id).with_for_update(key_share=True))


def field_values(incident: Incident) -> dict:
    """Return the mergeable fields as plain JSON values (what phones send as from/to)."""
    return {
        "description": incident.description,
        "category": incident.category_code_raw,
        "location": incident.raw_location,
        "status": incident.status,
        "priority": incident.priority,
        "assigned_squad": incident.assigned_squad_id,
    }


def cell_code(incident: Incident) -> str | None:
    """Return the code of the incident's cell, or None outside the grid."""
    return incident.cell.code if incident.cell_id else None


def change_fields(incident: Incident, new_values: dict, *, actor: User, source: str,
                  mutation_id: uuid.UUID | None, extra: dict | None = None) -> IncidentRevision | None:
    """Set fields, bump the version and write the revision (with `extra`, e.g. losing values of a merge).

    A location change re-places the incident and, when its cell changes, records a scope exit so
    phones that no longer see it evict it. Returns None when nothing changed.
    """
    before = field_values(incident)
    changed = {f: v for f, v in new_values.items() if before[f] != v}
    if not changed and not extra:
        return None
    old_code = cell_code(incident)
    for field, value in changed.items():
        if field == "description":
            incident.description = value
        elif field == "category":
            category = category_for_code(value)
            incident.category_code_raw, incident.category_id = value, category.id if category else None
        elif field == "location":
            point, cell = place(value)
            incident.raw_location, incident.location = value, from_shape(point, srid=geo.crs.STORAGE_SRID)
            incident.cell_id, incident.is_outside_grid = (cell.id if cell else None), cell is None
            if cell:
                incident.township_id = cell.township_id
        elif field == "status":
            incident.status = value
        elif field == "priority":
            incident.priority = value
        elif field == "assigned_squad":
            incident.assigned_squad_id = value
    db.session.flush()
    if "location" in changed:
        db.session.expire(incident, ["cell"])
        new_code = cell_code(incident)
        if new_code != old_code:
            db.session.add(ScopeExit(incident_id=incident.id, old_cell_code=old_code, new_cell_code=new_code))
            # Phones that gain the incident never saw its earlier notes: restamp them into the pull stream.
            db.session.execute(text("UPDATE incident_notes SET text = text WHERE incident_id = :id"), {"id": incident.id})
    incident.version += 1
    incident.updated_at = utcnow()
    revision = IncidentRevision(
        incident_id=incident.id, version=incident.version, mutation_id=mutation_id, source=source,
        actor_id=actor.id, changes={**{f: {"from": before[f], "to": v} for f, v in changed.items()}, **(extra or {})},
    )
    db.session.add(revision)
    db.session.flush()
    return revision


def add_note(incident: Incident, note_id: uuid.UUID, author: User, text_: str,
             created_at_device: datetime | None) -> IncidentNote:
    """Add a note (add-only: notes never conflict)."""
    note = IncidentNote(id=note_id, incident_id=incident.id, author_id=author.id, text=text_,
                        created_at_device=created_at_device)
    db.session.add(note)
    db.session.flush()
    return note



def incidents_in_scope(prefix: str, *, outside_grid: bool | None = None, status: str | None = None,
                       limit: int = 100, before: datetime | None = None) -> list[Incident]:
    """List incidents of townships inside a scope, newest first (by receipt on the server)."""
    query = (select(Incident).join(AdminArea, AdminArea.id == Incident.township_id)
             .where(AdminArea.code.startswith(prefix)).order_by(Incident.received_at.desc(), Incident.id).limit(limit))
    if outside_grid is not None:
        query = query.where(Incident.is_outside_grid == outside_grid)
    if status:
        query = query.where(Incident.status == status)
    if before:
        query = query.where(Incident.received_at < before)
    return list(db.session.scalars(query))


def incident_in_scope(incident_id: uuid.UUID, prefix: str) -> Incident:
    """Return one incident inside a scope.

    :raises IncidentNotFound: none with that id in scope.
    """
    incident = db.session.get(Incident, incident_id)
    if incident is None or not db.session.get(AdminArea, incident.township_id).code.startswith(prefix):
        raise IncidentNotFound(id=str(incident_id))
    return incident


PARTY_ROLES = frozenset({"grid_worker", "dispatcher", "duty_chief"})


def set_party(incident: Incident, party: dict) -> list[str]:
    """Record the party (当事人) fields given (name, phone, id_number; None clears one); return those set.

    The values stay out of the revision history and the events: personal data lives in one column each."""
    changed = []
    for key in ("name", "phone", "id_number"):
        if key in party:
            setattr(incident, f"party_{key}", party[key])
            changed.append(key)
    return changed


def record_party(incident_id: uuid.UUID, party: dict, actor: User, prefix: str) -> Incident:
    """Record the party of a case in scope (grid worker, dispatcher, duty chief), with an event saying so.

    :raises IncidentNotFound: not in scope.  :raises Forbidden: another role.
    """
    if actor.role not in PARTY_ROLES:
        raise Forbidden("Only grid workers and the dispatch centre record a party.")
    incident = incident_in_scope(incident_id, prefix)
    changed = set_party(incident, party)
    db.session.add(IncidentEvent(incident_id=incident.id, action="incident.party_recorded", actor_id=actor.id,
                                 actor_role=actor.role, from_status=incident.status, to_status=incident.status,
                                 details={"fields": changed}))
    db.session.flush()
    return incident


def revisions(incident: Incident) -> list[IncidentRevision]:
    """Return an incident's revision history, oldest first."""
    return list(db.session.scalars(select(IncidentRevision).where(IncidentRevision.incident_id == incident.id)
                                   .order_by(IncidentRevision.version)))
