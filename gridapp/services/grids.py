"""The grid registry: cells by area and bbox, locate a point, import a township's grid."""
import json
from dataclasses import dataclass, field

from geoalchemy2.shape import from_shape, to_shape
from sqlalchemy import select, text

import geo.crs
from geo.grid import is_cell_code
from geo.io import FeatureSource
from geo.measure import geodesic_area_m2
from geo.topology import CellInput, Thresholds, check_cells
from geo.validate import validate_polygon
from gridapp.errors import GridImportRejected, GridNotFound
from gridapp.extensions import db
from gridapp.models import AdminArea, GridCell, GridImport, utcnow
from gridapp.services.scope import refresh_scope

# One SQL shape renders a cell as an RFC 7946 Feature, so the page and the single cell agree and the
# JSON is built by PostgreSQL (far cheaper than shapely + json.dumps per cell). Geometries are stored
# with counter-clockwise exteriors already (geo.validate), as RFC 7946's right-hand rule asks.
_FEATURE_SQL = """
SELECT c.id, c.code, json_build_object(
    'type', 'Feature', 'id', c.code,
    'geometry', ST_AsGeoJSON(c.geom, 7)::json,
    'properties', json_build_object(
        'code', c.code, 'name', c.name,
        'village', json_build_object('code', v.code, 'name', v.name),
        'township', json_build_object('code', t.code, 'name', t.name),
        'area_m2', round(c.area_m2::numeric, 1),
        'valid_from', to_char(c.valid_from AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')))::text
FROM grid_cells c
JOIN admin_areas v ON v.id = c.village_id
JOIN admin_areas t ON t.id = c.township_id
WHERE c.valid_to IS NULL AND c.code LIKE :prefix || '%' {where}
ORDER BY c.code
LIMIT :limit
"""
_PAGE_SQL = text(_FEATURE_SQL.format(where="""
    AND (CAST(:after AS text) IS NULL OR c.code > :after)
    AND (CAST(:min_lon AS float8) IS NULL
         OR ST_Intersects(c.geom, ST_MakeEnvelope(:min_lon, :min_lat, :max_lon, :max_lat, 4326)))"""))
_ONE_SQL = text(_FEATURE_SQL.format(where="AND c.code = :code"))

# The cell containing a point, from the SQL function grid_locate (migration a5c81d2e7b90): its plan is
# made once per connection, where this query as a plain statement was planned on every call. A point
# on an edge or vertex shared by several cells belongs to the one with the lowest code.
_LOCATE_SQL = text("""
SELECT id, code, name, village_code, village_name, township_id, township_code, township_name
FROM grid_locate(:prefix, :lon, :lat)
""")


@dataclass
class CellPage:
    features: list[str]  # Feature JSON texts
    next_after: str | None  # code to pass as `after` for the next page, None on the last page


def cells_page(prefix: str, limit: int, bbox=None, after: str | None = None) -> CellPage:
    """Return one page of current cells in an area (and bbox), ordered by code, as Feature JSON."""
    min_lon, min_lat, max_lon, max_lat = bbox if bbox else (None,) * 4
    rows = db.session.execute(_PAGE_SQL, {
        "prefix": prefix, "after": after, "limit": limit + 1,
        "min_lon": min_lon, "min_lat": min_lat, "max_lon": max_lon, "max_lat": max_lat,
    }).all()
    more = len(rows) > limit
    rows = rows[:limit]
    return CellPage([r[2] for r in rows], rows[-1][1] if more else None)


def cell_feature(prefix: str, code: str) -> dict:
    """Return one current cell in an area as a Feature, with its assigned grid workers.

    :raises GridNotFound: no current cell with that code inside the area.
    """
    row = db.session.execute(_ONE_SQL, {"prefix": prefix, "code": code, "limit": 1}).first()
    if row is None:
        raise GridNotFound(code=code)
    feature = json.loads(row[2])
    cell = db.session.get(GridCell, row[0])
    feature["properties"]["workers"] = [
        {"username": u.username, "display_name": u.display_name} for u in sorted(cell.workers, key=lambda u: u.username)
    ]
    return feature


def locate(prefix: str, lon: float, lat: float, crs: str = "wgs84") -> dict:
    """Find the current cell containing a point, inside an area.

    :param lon, lat: the point in `crs` (wgs84, cgcs2000, gcj02 or bd09), converted to WGS84 first.
    :returns: the cell's code and name, its village and township, and the WGS84 point used.
    :raises GridNotFound: the point is in no cell of the area.
    :raises OutsideChina: a gcj02/bd09 point outside China, where those systems are undefined.
    """
    lon84, lat84 = geo.crs.to_wgs84(lon, lat, crs)
    row = cell_at(lon84, lat84, prefix)
    if row is None:
        raise GridNotFound("No grid cell contains this point.", lon=lon84, lat=lat84)
    return {
        "code": row.code, "name": row.name,
        "village": {"code": row.village_code, "name": row.village_name},
        "township": {"code": row.township_code, "name": row.township_name},
        "lon": lon84, "lat": lat84,
    }


def cell_at(lon: float, lat: float, prefix: str = ""):
    """Return the current cell row (id, code, township_id, names) containing a WGS84 point, or None.

    The empty prefix searches every township: the server places incidents, whoever reports them.
    """
    return db.session.execute(_LOCATE_SQL, {"prefix": prefix, "lon": lon, "lat": lat}).first()


# --- import ---------------------------------------------------------------------------------------
CODE_FIELDS = ("code", "grid_code", "wgbm", "dywgbm", "szdywgbsm", "bsm", "网格编码", "网格代码", "单元网格编码", "编码")
NAME_FIELDS = ("name", "grid_name", "wgmc", "网格名称", "单元网格名称", "名称")
VILLAGE_FIELDS = ("village", "village_name", "cmc", "sqmc", "村名称", "社区名称", "村社区", "所属村", "所属社区")


@dataclass
class FieldMap:
    """Which attribute holds the cell code, name and village name (None = detect)."""

    code: str | None = None
    name: str | None = None
    village: str | None = None


@dataclass
class ImportResult:
    grid_import: GridImport | None
    summary: dict
    report: dict
    villages_created: list[str] = field(default_factory=list)


def _pick_field(properties: dict, explicit: str | None, candidates: tuple[str, ...]) -> str | None:
    if explicit:
        return explicit
    lowered = {key.lower(): key for key in properties}
    for candidate in candidates:
        if candidate in lowered:
            return lowered[candidate]
    return None


def _cell_inputs(source: FeatureSource, fields: FieldMap, repair: bool) -> tuple[list[CellInput], dict, list[str]]:
    """Turn file features into CellInputs (code, name, geometry), repairing only when asked."""
    if not source.features:
        return [], {}, []
    first = source.features[0].properties
    code_key = _pick_field(first, fields.code, CODE_FIELDS)
    name_key = _pick_field(first, fields.name, NAME_FIELDS)
    village_key = _pick_field(first, fields.village, VILLAGE_FIELDS)
    if code_key is None:
        raise GridImportRejected(
            "No attribute holds the cell code; name it with --code-field.", attributes=sorted(first)
        )
    cells, village_names, notes = [], {}, []
    for feature in source.features:
        code = str(feature.properties.get(code_key) or "").strip()
        geom = feature.geom
        if repair and geom is not None and not geom.is_empty and not geom.is_valid:
            geom = validate_polygon(geom, repair=True).geom
            notes.append(f"{code}: repaired")
        name = str(feature.properties.get(name_key) or "").strip() if name_key else ""
        cells.append(CellInput(code=code, name=name or code, geom=geom))
        if village_key and feature.properties.get(village_key) and is_cell_code(code):
            village_names.setdefault(code[:12], str(feature.properties[village_key]).strip())
    return cells, village_names, notes


def import_cells(
    source: FeatureSource,
    township: AdminArea,
    *,
    filename: str,
    imported_by: str,
    fields: FieldMap | None = None,
    repair: bool = False,
    allow_warnings: bool = False,
    dry_run: bool = False,
    thresholds: Thresholds | None = None,
) -> ImportResult:
    """Check a township's complete grid and, if it passes, make it the current grid.

    Cells whose code and geometry are unchanged stay as they are; a changed cell gets a new version
    (the old one is closed, its workers carried over); current cells missing from the file are
    retired. Nothing is written when the check fails or on a dry run.

    :raises GridImportRejected: topology errors (or warnings without allow_warnings); details.report.
    """
    cells, village_names, notes = _cell_inputs(source, fields or FieldMap(), repair)
    boundary = to_shape(township.boundary) if township.boundary is not None else None
    report = check_cells(cells, township.code, boundary=boundary, thresholds=thresholds or Thresholds())
    report_dict = report.as_dict()
    if not cells:
        raise GridImportRejected("The file holds no features.", report=report_dict)
    if report.errors or (report.warnings and not allow_warnings):
        message = "The grid file failed the topology check." if report.errors else (
            "The grid file has topology warnings; re-run with --allow-warnings to accept them.")
        raise GridImportRejected(message, report=report_dict)

    validated = {c.code: validate_polygon(c.geom).geom for c in cells}
    current = {
        c.code: c for c in db.session.scalars(
            select(GridCell).where(GridCell.township_id == township.id, GridCell.valid_to.is_(None))
        )
    }
    names = {c.code: c.name for c in cells}
    added = [code for code in validated if code not in current]
    changed = [
        code for code in validated
        if code in current and (current[code].name != names[code]
                                or not to_shape(current[code].geom).equals_exact(validated[code], 1e-9))
    ]
    retired = [code for code in current if code not in validated]
    summary = {
        "features": len(cells), "added": len(added), "changed": len(changed), "retired": len(retired),
        "unchanged": len(validated) - len(added) - len(changed), "repairs": notes,
    }
    if dry_run:
        return ImportResult(None, summary, report_dict)

    villages, created = _ensure_villages(township, {code[:12] for code in validated}, village_names)
    grid_import = GridImport(
        township_id=township.id, filename=filename, driver=source.driver, source_crs=source.source_crs,
        encoding=source.encoding, imported_by=imported_by, summary=summary, report=report_dict,
    )
    db.session.add(grid_import)
    now = utcnow()
    for code in changed + retired:
        current[code].valid_to = now
    for code in added + changed:
        geom = validated[code]
        cell = GridCell(
            code=code, name=names[code], village_id=villages[code[:12]].id, township_id=township.id,
            geom=from_shape(geom, srid=geo.crs.STORAGE_SRID), area_m2=geodesic_area_m2(geom),
            valid_from=now, grid_import=grid_import,
        )
        if code in current:
            cell.workers = list(current[code].workers)
        db.session.add(cell)
    db.session.flush()
    if added or changed:
        rebuild_cell_index()
    # Workers of retired cells lose them: their phones must evict those cells' incidents.
    for user in {worker for code in retired for worker in current[code].workers}:
        db.session.refresh(user, ["cells"])
        refresh_scope(user)
    return ImportResult(grid_import, summary, report_dict, created)


def rebuild_cell_index() -> None:
    """Rebuild the cells' GiST index after cells were inserted (in the caller's transaction).

    A GiST index that grew row by row as a grid was inserted has boxes that overlap badly: a point lookup
    read ~18 index pages per point on the benchmark's 10,000-cell county, 0.45-0.6 ms; rebuilt (sorted
    build), ~7 pages, 0.14-0.19 ms (bench/RESULTS.md, "Push throughput"). Every report's cell lookup pays
    it. REINDEX locks the index until the import commits, so cell lookups wait for the import's end (a
    rare admin step; the rebuild itself takes ~50 ms per 10,000 cells here).
    """
    db.session.execute(text("REINDEX INDEX idx_grid_cells_geom"))


def _ensure_villages(township: AdminArea, codes: set[str], names: dict[str, str]):
    """Return the township's villages by code, creating the missing ones (named from the file)."""
    existing = {
        v.code: v for v in db.session.scalars(
            select(AdminArea).where(AdminArea.level == "village", AdminArea.code.in_(codes))
        )
    }
    created = []
    for code in sorted(codes - set(existing)):
        village = AdminArea(code=code, name=names.get(code) or f"村(社区){code[-3:]}", level="village",
                            parent=township)
        db.session.add(village)
        existing[code] = village
        created.append(code)
    db.session.flush()
    return existing, created
