"""One filter for incidents, shared by every export, the OGC API, the evaluation and the dashboard:
time range, area, cell, category, status and squad, always bounded by the caller's area scope.

It compiles to a SQL WHERE clause (psycopg `%(name)s` parameters) over the aliases `i` (incidents), `t` (the township) and `c` (the cell),
because exports stream rows straight from PostgreSQL."""
from dataclasses import asdict, dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class IncidentFilter:
    start: datetime | None = None  # received at or after
    end: datetime | None = None  # received before
    area: str | None = None  # county (6), township (9) or village (12) code
    cell: str | None = None  # 15-digit cell code
    category: str | None = None  # a 5-digit code, or a 2-digit 大类 prefix
    status: tuple[str, ...] = field(default_factory=tuple)
    squad: int | None = None  # squad id
    bbox: tuple[float, float, float, float] | None = None  # min_lon, min_lat, max_lon, max_lat (OGC API)

    @classmethod
    def from_args(cls, args: dict) -> "IncidentFilter":
        """Build from parsed query arguments (schemas/filters.py); unknown keys are ignored."""
        known = {k: v for k, v in args.items() if k in cls.__dataclass_fields__ and v is not None}
        if "status" in known:
            known["status"] = tuple(known["status"])
        if "bbox" in known:
            known["bbox"] = tuple(known["bbox"])
        return cls(**known)

    def to_json(self) -> dict:
        """A JSON-safe copy (for job records and the access log)."""
        data = {k: v for k, v in asdict(self).items() if v not in (None, ())}
        for key in ("start", "end"):
            if key in data:
                data[key] = data[key].isoformat()
        for key in ("status", "bbox"):
            if key in data:
                data[key] = list(data[key])
        return data

    @classmethod
    def from_json(cls, data: dict) -> "IncidentFilter":
        data = dict(data)
        for key in ("start", "end"):
            if key in data:
                data[key] = datetime.fromisoformat(data[key])
        return cls.from_args(data)


def incident_where(flt: IncidentFilter, prefix: str) -> tuple[str, dict]:
    """Return the WHERE clause (without the keyword) and its parameters for a filter inside a scope."""
    clauses = ["t.code LIKE %(scope)s"]
    params: dict = {"scope": prefix + "%"}
    if flt.start:
        clauses.append("i.received_at >= %(start)s")
        params["start"] = flt.start
    if flt.end:
        clauses.append("i.received_at < %(end)s")
        params["end"] = flt.end
    if flt.area:
        # A cell code begins with its village's code, which begins with its township's.
        clauses.append("coalesce(c.code, t.code) LIKE %(area)s")
        params["area"] = flt.area + "%"
    if flt.cell:
        clauses.append("c.code = %(cell)s")
        params["cell"] = flt.cell
    if flt.category:
        clauses.append("i.category_code_raw LIKE %(category)s")
        params["category"] = flt.category + "%"
    if flt.status:
        clauses.append("i.status = ANY(%(status)s)")
        params["status"] = list(flt.status)
    if flt.squad is not None:
        clauses.append("i.assigned_squad_id = %(squad)s")
        params["squad"] = flt.squad
    if flt.bbox:
        clauses.append("i.location && ST_MakeEnvelope(%(bx0)s, %(by0)s, %(bx1)s, %(by1)s, 4326)")
        params.update(dict(zip(("bx0", "by0", "bx1", "by1"), flt.bbox)))
    return " AND ".join(clauses), params


def cell_where(flt: IncidentFilter, prefix: str) -> tuple[str, dict]:
    """The same for grid cells (`c`, township `t`): only area, cell and bbox apply; current cells only."""
    clauses = ["c.valid_to IS NULL", "c.code LIKE %(scope)s"]
    params: dict = {"scope": prefix + "%"}
    if flt.area:
        clauses.append("c.code LIKE %(area)s")
        params["area"] = flt.area + "%"
    if flt.cell:
        clauses.append("c.code = %(cell)s")
        params["cell"] = flt.cell
    if flt.bbox:
        clauses.append("c.geom && ST_MakeEnvelope(%(bx0)s, %(by0)s, %(bx1)s, %(by1)s, 4326)")
        params.update(dict(zip(("bx0", "by0", "bx1", "by1"), flt.bbox)))
    return " AND ".join(clauses), params
