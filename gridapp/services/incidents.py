"""Incidents as reported: placing them in their cell, case numbers, field changes with history, notes."""
import uuid
from datetime import datetime
from zoneinfo import ZoneInfo

from flask import current_app
from geoalchemy2.shape import from_shape
from shapely.geometry import Point
from sqlalchemy import String, any_, cast, func, select, text
from sqlalchemy.dialects.postgresql import ARRAY

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
    return case_numbers({county_code: 1}, when)[county_code][0]


def case_numbers(counts: dict[str, int], when: datetime) -> dict[str, list[str]]:
    """Hand out blocks of 案卷号, `counts[county]` for each county, in one statement.

    The statement runs in a short transaction of its own, committed at once: the (county, day) counter row
    is locked for that statement only, not until the caller's transaction ends, which would serialise every
    report of a county behind the slowest (bench/RESULTS.md, "Dispatch"). Numbers are unique and increase
    in the order they are handed out; a caller that rolls back leaves a gap in the day's sequence. Rows are
    taken in code order, so two callers wanting several counties cannot deadlock.
    """
    day = when.astimezone(CASE_NUMBER_TZ).strftime("%Y%m%d")
    counties = sorted(counts)
    with db.engine.begin() as connection:
        rows = connection.execute(text("""
            INSERT INTO case_number_counters (county_code, day, last)
            SELECT county, :day, n FROM unnest(CAST(:counties AS text[]), CAST(:counts AS int[])) AS t(county, n)
            ORDER BY county
            ON CONFLICT (county_code, day) DO UPDATE SET last = case_number_counters.last + EXCLUDED.last
            RETURNING county_code, last"""), {"day": day, "counties": counties, "counts": [counts[c] for c in counties]})
        blocks = {county: [f"{county}{day}{seq:05d}" for seq in range(last - counts[county] + 1, last + 1)]
                  for county, last in rows}
    return blocks


def event_categories(codes) -> tuple:
    """The categories a report's category code may name, as WHERE conditions: the active event categories
    (小类) of the default standard with these codes (an array: one statement text whatever their number)."""
    return (Category.standard == DEFAULT_STANDARD, Category.kind == "event",
            Category.code == any_(cast(sorted(set(codes)), ARRAY(String))), Category.is_active)


def category_ids(codes) -> dict[str, int]:
    """Return the ids of the categories with these codes (`event_categories`)."""
    return dict(db.session.execute(select(Category.code, Category.id).where(*event_categories(codes))).all())


def place(location: dict):
    """Convert a phone's {lon, lat, crs} to WGS84 and find its cell.

    :returns: (shapely Point in WGS84, cell row or None).
    :raises OutsideChina: a gcj02/bd09 point outside China.
    """
    lon, lat = geo.crs.to_wgs84(location["lon"], location["lat"], location.get("crs", "wgs84"))
    return Point(lon, lat), cell_at(lon, lat)


# grids.cell_at for many points at once: grid_locate_many, grid_locate's query (lowest code on shared edges)
# for an array of points in one call (migration c3a7e9d1f452; a test checks both agree on edges).
_LOCATE_MANY_SQL = text("""
SELECT m.ord, m.id, m.code, m.township_id, t.code AS township_code
FROM grid_locate_many('', CAST(:lons AS float8[]), CAST(:lats AS float8[])) m
JOIN admin_areas t ON t.id = m.township_id
""")


def cells_at(points: list[tuple[float, float]]) -> list:
    """Return the current cell row (id, code, township_id, township_code) of each WGS84 point, or None."""
    found = {}
    if points:
        found = {row.ord: row for row in db.session.execute(
            _LOCATE_MANY_SQL, {"lons": [x for x, _ in points], "lats": [y for _, y in points]})}
    return [found.get(i) for i in range(1, len(points) + 1)]


def county_codes(township_ids) -> dict[int, str]:
    """Return the 6-digit county code of each township."""
    return dict(db.session.execute(select(AdminArea.id, func.left(AdminArea.code, 6))
                                   .where(AdminArea.id.in_(set(township_ids)))).all())


def new_incident_values(*, incident_id: uuid.UUID, case_number: str | None, reporter_id: int, device_id: uuid.UUID | None,
                        category_code: str, category_id: int | None, description: str, location: dict,
                        point: Point, cell, township_id: int, gps_accuracy_m: float | None,
                        created_at_device: datetime | None, clock_suspect: bool, party: dict | None,
                        likely_duplicate_of: uuid.UUID | None) -> dict:
    """Return the column values of a newly reported incident (the ORM path and the set-based push share them).

    `township_id` is used only when the point is in no cell (the reporter's township).
    """
    party = party or {}
    return {
        "id": incident_id, "case_number": case_number, "version": 1, "status": "reported",
        "category_id": category_id, "category_code_raw": category_code, "description": description,
        "location": from_shape(point, srid=geo.crs.STORAGE_SRID), "raw_location": location,
        "gps_accuracy_m": gps_accuracy_m, "cell_id": cell.id if cell else None,
        "township_id": cell.township_id if cell else township_id, "is_outside_grid": cell is None,
        "reporter_id": reporter_id, "device_id": device_id, "created_at_device": created_at_device,
        "clock_suspect": clock_suspect, "likely_duplicate_of": likely_duplicate_of,
        **{f"party_{key}": party.get(key) for key in ("name", "phone", "id_number")},
    }


def created_revision_values(values: dict, mutation_id: uuid.UUID | None, actor_id: int) -> dict:
    """Return the column values of a new incident's first revision (`values` from new_incident_values, which
    leaves the columns set only by dispatch, priority and squad, to their default: None)."""
    fields = {name: values.get(column) for name, column in FIELD_COLUMNS.items()}
    return {"incident_id": values["id"], "version": 1, "mutation_id": mutation_id, "source": "device",
            "actor_id": actor_id, "changes": {"created": {"to": fields}}}


def create_incident(*, incident_id: uuid.UUID, reporter: User, device: Device | None, category_code: str,
                    description: str, location: dict, gps_accuracy_m: float | None,
                    created_at_device: datetime | None, clock_suspect: bool, mutation_id: uuid.UUID | None,
                    township_id: int, party: dict | None = None, placed=None) -> Incident:
    """Create a reported incident placed by the database; a point outside every cell is kept and flagged.

    `township_id` is used only when the point is in no cell (the reporter's township). `placed` is what
    `place(location)` returned, when the caller has it already.
    """
    point, cell = placed or place(location)
    category_id = category_ids([category_code]).get(category_code)
    if cell is not None:
        county_code = cell.township_code[:6]
    else:
        county_code = county_codes([township_id])[township_id]
    values = new_incident_values(
        incident_id=incident_id, case_number=next_case_number(county_code, utcnow()), reporter_id=reporter.id,
        device_id=device.id if device else None, category_code=category_code,
        category_id=category_id, description=description, location=location, point=point,
        cell=cell, township_id=township_id, gps_accuracy_m=gps_accuracy_m, created_at_device=created_at_device,
        clock_suspect=clock_suspect, party=party,
        likely_duplicate_of=likely_duplicates([(incident_id, category_code, point.x, point.y)])[0],
    )
    incident = Incident(**values)
    db.session.add(incident)
    db.session.add(IncidentRevision(**created_revision_values(values, mutation_id, reporter.id)))
    db.session.flush()
    return incident


# An open case of the same category within the configured distance and time window, nearest first.
# `n` is the report being checked (id, cat, geom, received_at, ord); for a batch of new reports, the
# earlier reports of the batch (lower ord) count as well, as if each had been committed before the next.
_DUPLICATE_SQL = """
SELECT n.ord, (
    SELECT d.id FROM (
        SELECT o.id, ST_Distance(o.location::geography, n.geom::geography) AS distance, o.received_at, 0 AS ord
        FROM incidents o
        WHERE o.id <> n.id AND o.category_code_raw = n.cat AND o.status = ANY(:open)
          AND o.received_at >= n.received_at - make_interval(hours => :hours)
          AND o.location && n.box  -- index prefilter, then the exact distance
          AND ST_DWithin(o.location::geography, n.geom::geography, :metres)
        UNION ALL
        SELECT b.id, ST_Distance(b.geom::geography, n.geom::geography), b.received_at, b.ord
        FROM new b
        WHERE b.ord < n.ord AND b.cat = n.cat AND b.geom && n.box  -- the same prefilter for the batch's reports
          AND ST_DWithin(b.geom::geography, n.geom::geography, :metres)
    ) d ORDER BY d.distance, d.received_at, d.ord LIMIT 1)
FROM (SELECT new.*, ST_Expand(geom, :metres / (111319 * cos(radians(least(abs(ST_Y(geom)) + 0.01, 89)))),
                              :metres / 110574.0) AS box
      FROM new) n
"""
_DUPLICATE_OF_NEW_SQL = text("""
WITH new AS (
    SELECT t.id, t.cat, ST_SetSRID(ST_MakePoint(t.lon, t.lat), 4326) AS geom, now() AS received_at, t.ord
    FROM unnest(CAST(:ids AS uuid[]), CAST(:cats AS text[]), CAST(:lons AS float8[]), CAST(:lats AS float8[]))
         WITH ORDINALITY AS t(id, cat, lon, lat, ord))
""" + _DUPLICATE_SQL)
_DUPLICATE_OF_STORED_SQL = text("""
WITH new AS (SELECT id, category_code_raw AS cat, location AS geom, received_at, 1 AS ord
             FROM incidents WHERE id = :id)
""" + _DUPLICATE_SQL)


def _duplicate_params() -> dict:
    # The prefilter box is a little larger than `metres` both ways: a degree of latitude is at least 110,574 m,
    # one of longitude at least 111,319 m × cos(latitude) (taken 0.01° nearer the pole, for the other point).
    return {"open": list(OPEN_STATUSES), "hours": current_app.config["DUPLICATE_WINDOW_HOURS"],
            "metres": current_app.config["DUPLICATE_DISTANCE_M"]}


def likely_duplicates(reports: list[tuple[uuid.UUID, str, float, float]]) -> list[uuid.UUID | None]:
    """Find the likely duplicate of each new report (id, category code, WGS84 lon, lat), not stored yet.

    An earlier report of the same list counts as if stored before the later one (it is, in push order).
    """
    if not reports:
        return []
    ids, cats, lons, lats = (list(column) for column in zip(*reports, strict=True))
    if len(reports) > 1:  # the planner's estimate for a batch passes jit_above_cost; compiling costs ×4 the query
        db.session.execute(text("SET LOCAL jit = off"))
    found = dict(db.session.execute(_DUPLICATE_OF_NEW_SQL, {
        "ids": ids, "cats": cats, "lons": lons, "lats": lats, **_duplicate_params()}).all())
    return [found.get(i) for i in range(1, len(reports) + 1)]


def likely_duplicate(incident: Incident) -> uuid.UUID | None:
    """Find an open case of the same category within the configured distance and time window."""
    return db.session.execute(_DUPLICATE_OF_STORED_SQL, {"id": incident.id, **_duplicate_params()}).one()[1]


def lock_incident(incident_id: uuid.UUID) -> Incident | None:
    """Load an incident locked against concurrent changes (merges, workflow steps).

    FOR NO KEY UPDATE, not FOR UPDATE: it still serialises writers, but lets other transactions check
    foreign keys that point at this case (a likely duplicate, a master case) without waiting, which
    would otherwise deadlock against the commit-time sync_seq stamping.
    """
    return db.session.scalar(select(Incident).where(Incident.id == incident_id).with_for_update(key_share=True))


# The mergeable fields (what phones send as from/to) and the incident columns that hold them.
FIELD_COLUMNS = {"description": "description", "category": "category_code_raw", "location": "raw_location",
                 "status": "status", "priority": "priority", "assigned_squad": "assigned_squad_id"}


def field_values(incident: Incident) -> dict:
    """Return the mergeable fields as plain JSON values (what phones send as from/to)."""
    return {name: getattr(incident, column) for name, column in FIELD_COLUMNS.items()}


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
            incident.category_code_raw, incident.category_id = value, category_ids([value]).get(value)
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
