"""Incident map tiles (Mapbox Vector Tiles made by PostGIS) and the cells/villages layer of the dashboard.

Two kinds of tile (docs/dashboard.md, "Map"):
- z >= RAW_MIN_ZOOM: one point per incident, from the stored Web Mercator copy and its GiST index, with
  only low-cardinality properties (status, class): a unique id per feature (a UUID string) makes
  ST_AsMVT ~25 % slower, and the map opens cases from the cell panel, not from a point;
- below: one point per bucket group with counts per status class, from incident_bucket_counts, which
  triggers keep exact in the same transaction as every change. Filters the counts cannot answer
  (category, village, squad, time) make a low-zoom tile count the raw points instead (slower, exact).
Every tile is limited to the townships of the caller's area, decided per request.
"""
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, text

from gridapp.extensions import db
from gridapp.models import BUCKET_LEVELS, BUCKET_ZOOM, STATUS_CLASSES, AdminArea

RAW_MIN_ZOOM = 14
MAX_ZOOM = 20
WORLD_HALF = 20037508.342789244


@dataclass(frozen=True)
class TileFilters:
    """What the dashboard's filter bar may narrow the map to (all optional)."""

    classes: tuple[str, ...] = ()
    category: str | None = None  # a code prefix: 06 = a whole major class
    village_id: int | None = None
    squad_id: int | None = None
    since: datetime | None = None
    until: datetime | None = None

    @property
    def needs_raw(self) -> bool:
        """Whether counts per (bucket, class) cannot answer these filters."""
        return any(v is not None for v in (self.category, self.village_id, self.squad_id, self.since, self.until))


def townships_in_scope(prefix: str) -> list[int]:
    """Return the ids of the townships inside an area-code prefix (the per-request tile authorisation)."""
    return list(db.session.scalars(select(AdminArea.id).where(AdminArea.level == "township",
                                                             AdminArea.code.startswith(prefix))))


def valid_tile(z: int, x: int, y: int) -> bool:
    return 0 <= z <= MAX_ZOOM and 0 <= x < 2 ** z and 0 <= y < 2 ** z


def _where(filters: TileFilters, params: dict) -> str:
    clauses = []
    if filters.classes:
        clauses.append("incident_status_class(i.status, i.overdue_at) = ANY(:classes)")
        params["classes"] = list(filters.classes)
    if filters.category:
        clauses.append("i.category_code_raw LIKE :category")
        params["category"] = filters.category.replace("%", "").replace("_", "") + "%"
    if filters.village_id is not None:
        clauses.append("i.cell_id IN (SELECT id FROM grid_cells WHERE village_id = :village_id)")
        params["village_id"] = filters.village_id
    if filters.squad_id is not None:
        clauses.append("i.assigned_squad_id = :squad_id")
        params["squad_id"] = filters.squad_id
    if filters.since is not None:
        clauses.append("i.received_at >= :since")
        params["since"] = filters.since
    if filters.until is not None:
        clauses.append("i.received_at < :until")
        params["until"] = filters.until
    return "".join(f" AND {c}" for c in clauses)


_RAW_SQL = """
SELECT ST_AsMVT(t, 'incidents', 4096, 'geom') FROM (
  SELECT ST_AsMVTGeom(i.location_3857, ST_TileEnvelope(:z, :x, :y), 4096, 64, true) AS geom,
         i.status, incident_status_class(i.status, i.overdue_at) AS class
  FROM incidents i
  WHERE i.location_3857 && ST_TileEnvelope(:z, :x, :y, margin => 64.0 / 4096)
    AND i.township_id = ANY(:townships) {where}
) t
"""

# Groups of buckets: at zoom z a tile is split into at most 64 × 64 groups.
_GROUPS_SQL = """
WITH b AS ({buckets}),
g AS (
  SELECT ST_AsMVTGeom(ST_Point(-{half} + (gx + 0.5) * :size, {half} - (gy + 0.5) * :size, 3857),
                      ST_TileEnvelope(:z, :x, :y), 4096, 0, true) AS geom,
         sum(n)::int AS count, {per_class}
  FROM b GROUP BY gx, gy HAVING sum(n) > 0
)
SELECT ST_AsMVT(g, 'clusters', 4096, 'geom') FROM g WHERE geom IS NOT NULL
"""
# The counts up to the last fold plus the deltas since: exact at every moment.
_COUNTED_BUCKETS = """
SELECT bx >> :shift AS gx, by >> :shift AS gy, status_class, n FROM (
  SELECT bx, by, township_id, status_class, n FROM incident_bucket_counts
  WHERE zoom = :stored AND bx BETWEEN :x0 AND :x1 AND by BETWEEN :y0 AND :y1
  UNION ALL
  SELECT bx, by, township_id, status_class, n FROM incident_bucket_deltas
  WHERE zoom = :stored AND bx BETWEEN :x0 AND :x1 AND by BETWEEN :y0 AND :y1
) AS b WHERE township_id = ANY(:townships) {where}
"""
_LIVE_BUCKETS = """
SELECT incident_bucket_x(i.location_3857) >> :live_shift AS gx,
       incident_bucket_y(i.location_3857) >> :live_shift AS gy,
       incident_status_class(i.status, i.overdue_at) AS status_class, 1 AS n
FROM incidents i
WHERE i.location_3857 && ST_TileEnvelope(:z, :x, :y) AND i.township_id = ANY(:townships) {where}
"""


def tile_query(prefix: str, z: int, x: int, y: int, filters: TileFilters = TileFilters()) -> tuple[str, dict]:
    """Return the SQL text and parameters of one tile (bench/map_tiles.py runs the same text in psql)."""
    params = {"z": z, "x": x, "y": y, "townships": townships_in_scope(prefix)}
    if z >= RAW_MIN_ZOOM:
        return _RAW_SQL.format(where=_where(filters, params)), params
    # The finest counted level that needs at most 64 × 64 buckets per tile, grouped to at most 64 × 64.
    stored = next((level for level in BUCKET_LEVELS if level <= z + 6), BUCKET_LEVELS[-1])
    level = min(stored, z + 6)
    span = 2 ** (stored - z)  # buckets per tile side
    params.update(stored=stored, shift=stored - level, live_shift=BUCKET_ZOOM - level, size=2 * WORLD_HALF / 2 ** level,
                  x0=x * span, x1=(x + 1) * span - 1, y0=y * span, y1=(y + 1) * span - 1)
    if filters.needs_raw:
        buckets = _LIVE_BUCKETS.format(where=_where(filters, params))
    else:
        where = ""
        if filters.classes:
            where, params["classes"] = " AND status_class = ANY(:classes)", list(filters.classes)
        buckets = _COUNTED_BUCKETS.format(where=where)
    per_class = ", ".join(f"(sum(n) FILTER (WHERE status_class = '{c}'))::int AS {c}" for c in STATUS_CLASSES)
    return _GROUPS_SQL.format(buckets=buckets, half=WORLD_HALF, per_class=per_class), params


TILE_SETTING = "max_parallel_workers_per_gather = 0"  # see incident_tile


def incident_tile(prefix: str, z: int, x: int, y: int, filters: TileFilters = TileFilters()) -> bytes:
    """Return the MVT bytes of one tile for a user whose area is `prefix` (empty bytes: nothing there)."""
    sql, params = tile_query(prefix, z, x, y, filters)
    # A tile reads a few thousand rows: launching parallel workers costs more than it saves (measured at
    # z14 over 1M incidents: 30-36 ms with two workers, 22 ms without), and a map fires many tiles at once.
    db.session.execute(text(f"SET LOCAL {TILE_SETTING}"))
    return bytes(db.session.execute(text(sql), params).scalar() or b"")


_CELLS_SQL = text("""
SELECT json_build_object('type', 'FeatureCollection', 'features', coalesce(json_agg(json_build_object(
  'type', 'Feature', 'geometry', ST_AsGeoJSON(c.geom, 6)::json,
  'properties', json_build_object('code', c.code, 'name', c.name, 'village', v.name, 'village_id', v.id)
) ORDER BY c.code), '[]'::json))::text
FROM grid_cells c JOIN admin_areas v ON v.id = c.village_id
WHERE c.valid_to IS NULL AND c.code LIKE :prefix
""")
_VILLAGES_SQL = text("""
SELECT json_build_object('type', 'FeatureCollection', 'features', coalesce(json_agg(json_build_object(
  'type', 'Feature', 'geometry', ST_AsGeoJSON(g.geom, 6)::json,
  'properties', json_build_object('id', g.id, 'name', g.name, 'code', g.code)
)), '[]'::json))::text
FROM (SELECT v.id, v.name, v.code, ST_Union(c.geom) AS geom FROM grid_cells c JOIN admin_areas v ON v.id = c.village_id
      WHERE c.valid_to IS NULL AND c.code LIKE :prefix GROUP BY v.id, v.name, v.code) g
""")


def cells_geojson(prefix: str) -> str:
    """The current cells of the area as GeoJSON text, built in PostGIS (PERF.md §d: 3× faster than Python)."""
    return db.session.execute(_CELLS_SQL, {"prefix": prefix + "%"}).scalar()


def villages_geojson(prefix: str) -> str:
    """Village outlines (the union of their cells) as GeoJSON text: with the cells, the map's basemap."""
    return db.session.execute(_VILLAGES_SQL, {"prefix": prefix + "%"}).scalar()


def fold_bucket_deltas() -> int:
    """Move the pending deltas into the counts (keeps the delta table small); return the rows folded."""
    return db.session.execute(text("SELECT incident_bucket_counts_fold()")).scalar()


def rebuild_bucket_counts() -> int:
    """Recompute the low-zoom counts from the incidents (after a bulk load); return the row count."""
    return db.session.execute(text("SELECT incident_bucket_counts_rebuild()")).scalar()
