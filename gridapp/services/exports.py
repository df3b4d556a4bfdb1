"""Incident and grid-cell exports streamed from PostgreSQL: GeoJSON, GeoPackage, zipped Shapefile, KML,
CSV (UTF-8 with BOM) and XLSX. Rows come through a server-side cursor in batches, so memory stays bounded
whatever the row count; personal data is masked (services/masking.py) unless the export is unmasked,
which needs its own permission, a reason and an access-log record (`log_unmasked`)."""
import csv
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import shapely
from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell

from geo.writers import kml, shp
from geo.writers.gpkg import GeoPackageWriter, point_wkb
from gridapp.extensions import db
from gridapp.models import PersonalDataAccess, User
from gridapp.services.filters import IncidentFilter, cell_where, incident_where
from gridapp.services.masking import MASKERS, PERSONAL_FIELDS
from gridapp.services.rawsql import cursor

FORMATS = ("geojson", "gpkg", "shp", "kml", "csv", "xlsx")
LAYERS = ("incidents", "cells")
MEDIA_TYPES = {
    "geojson": "application/geo+json",
    "gpkg": "application/geopackage+sqlite3",
    "shp": "application/zip",
    "kml": "application/vnd.google-earth.kml+xml",
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
EXTENSIONS = {"geojson": "geojson", "gpkg": "gpkg", "shp": "shp.zip", "kml": "kml", "csv": "csv", "xlsx": "xlsx"}
BATCH_ROWS = 2000
PROGRESS_ROWS = 50_000  # export jobs record their progress this often
SHANGHAI = "'YYYY-MM-DD\"T\"HH24:MI:SS\"+08:00\"'"


def _local(column: str) -> str:
    # Times leave in Shanghai time with the offset written out (what a clerk reads, what GIS parses).
    return f"to_char({column} AT TIME ZONE 'Asia/Shanghai', {SHANGHAI})"


@dataclass(frozen=True)
class Layer:
    name: str
    fields: tuple[tuple[str, str, str], ...]  # (name, SQL expression, text|integer|real)
    from_sql: str
    geometry_column: str
    geometry_type: str  # POINT | MULTIPOLYGON (GeoPackage names)
    label_field: str

    @property
    def field_names(self) -> list[str]:
        return [name for name, _, _ in self.fields]


INCIDENTS = Layer(
    name="incidents",
    fields=(
        ("id", "i.id::text", "text"),
        ("case_number", "i.case_number", "text"),
        ("status", "i.status", "text"),
        ("category_code", "i.category_code_raw", "text"),
        ("category_name", "cat.name", "text"),
        ("description", "i.description", "text"),
        ("township_code", "t.code", "text"),
        ("township_name", "t.name", "text"),
        ("cell_code", "c.code", "text"),
        ("squad_name", "s.name", "text"),
        ("reporter", "u.username", "text"),
        ("received_at", _local("i.received_at"), "text"),
        ("due_at", _local("i.due_at"), "text"),
        ("rework_count", "i.rework_count", "integer"),
        ("party_name", "i.party_name", "text"),
        ("party_phone", "i.party_phone", "text"),
        ("party_id_number", "i.party_id_number", "text"),
        ("lon", "round(ST_X(i.location)::numeric, 7)::float8", "real"),
        ("lat", "round(ST_Y(i.location)::numeric, 7)::float8", "real"),
    ),
    from_sql="""incidents i JOIN admin_areas t ON t.id = i.township_id
        LEFT JOIN grid_cells c ON c.id = i.cell_id LEFT JOIN categories cat ON cat.id = i.category_id
        LEFT JOIN squads s ON s.id = i.assigned_squad_id JOIN users u ON u.id = i.reporter_id""",
    geometry_column="i.location",
    geometry_type="POINT",
    label_field="case_number",
)
CELLS = Layer(
    name="cells",
    fields=(
        ("code", "c.code", "text"),
        ("name", "c.name", "text"),
        ("village_code", "v.code", "text"),
        ("village_name", "v.name", "text"),
        ("township_code", "t.code", "text"),
        ("township_name", "t.name", "text"),
        ("area_m2", "round(c.area_m2::numeric, 1)::float8", "real"),
    ),
    from_sql="grid_cells c JOIN admin_areas t ON t.id = c.township_id JOIN admin_areas v ON v.id = c.village_id",
    geometry_column="c.geom",
    geometry_type="MULTIPOLYGON",
    label_field="code",
)
LAYER_BY_NAME = {"incidents": INCIDENTS, "cells": CELLS}
# Columns that hold digits but are text: Excel must not turn them into numbers (18-digit ID numbers).
TEXT_COLUMNS = frozenset({"case_number", "party_phone", "party_id_number", "code", "cell_code", "township_code",
                          "village_code", "category_code"})


def where_for(layer: Layer, flt: IncidentFilter, prefix: str) -> tuple[str, dict]:
    return (incident_where if layer is INCIDENTS else cell_where)(flt, prefix)


def count_rows(layer: Layer, flt: IncidentFilter, prefix: str) -> int:
    where, params = where_for(layer, flt, prefix)
    with cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {layer.from_sql} WHERE {where}", params)
        return cur.fetchone()[0]


def stream_rows(layer: Layer, flt: IncidentFilter, prefix: str, geometry_sql: str | None,
                extra_sql: str = "") -> Iterator[tuple]:
    """Yield each row's field values (in layer order) followed by the geometry expression's value."""
    where, params = where_for(layer, flt, prefix)
    columns = ", ".join(expr for _, expr, _ in layer.fields)
    if geometry_sql:
        columns += ", " + geometry_sql.format(geom=layer.geometry_column)
    with cursor("export_rows") as cur:
        cur.itersize = BATCH_ROWS
        cur.execute(f"SELECT {columns} FROM {layer.from_sql} WHERE {where} {extra_sql}", params)
        yield from cur


def masker(layer: Layer, unmasked: bool):
    """Return a function that masks a row (a list) in place, or None when nothing needs masking."""
    if unmasked or layer is not INCIDENTS:
        return None
    positions = [(layer.field_names.index(f), MASKERS[f]) for f in PERSONAL_FIELDS]

    def mask(row: list) -> list:
        for index, mask_value in positions:
            if row[index]:
                row[index] = mask_value(row[index])
        return row

    return mask


def log_unmasked(user: User, purpose: str, reason: str, flt: IncidentFilter, job_id=None) -> PersonalDataAccess:
    """Record a look at unmasked personal data; committed by the caller before any row leaves."""
    entry = PersonalDataAccess(user_id=user.id, username=user.username, role=user.role, purpose=purpose,
                               reason=reason, filters=flt.to_json(), export_job_id=job_id)
    db.session.add(entry)
    db.session.flush()
    return entry


# --- the writers ------------------------------------------------------------------------------------
@dataclass
class Export:
    layer: Layer
    flt: IncidentFilter
    prefix: str
    unmasked: bool = False
    srs_id: int = 4326
    progress: object = None  # called with the rows written so far, every batch (export jobs)

    def rows(self, geometry_sql: str | None) -> Iterator[list]:
        mask = masker(self.layer, self.unmasked)
        for count, row in enumerate(stream_rows(self.layer, self.flt, self.prefix, geometry_sql), 1):
            row = list(row)
            yield mask(row) if mask else row
            if self.progress and count % PROGRESS_ROWS == 0:
                self.progress(count)


def geojson_chunks(export: Export) -> Iterator[bytes]:
    """RFC 7946 FeatureCollection: lon/lat, no `crs`, polygons counter-clockwise (right-hand rule).

    PostgreSQL writes each feature's JSON (all but the personal fields) and streams it with COPY, the
    fastest way out of the database; Python appends the personal fields, masked, to each line. COPY's
    text format doubles backslashes (JSON escapes are the only ones in these lines), so they are undone."""
    sql, params, personal = geojson_copy_sql(export)
    names = [n for n, _, _ in personal]
    maskers = [None if export.unmasked else MASKERS[n] for n in names]
    no_personal = b"\t\\N" * len(personal)  # what COPY writes for all-NULL personal columns
    closing = ("".join(f',"{n}":null' for n in names) + "}}").encode()
    yield b'{"type":"FeatureCollection","features":[\n'
    first, count, pending, next_report = True, 0, b"", PROGRESS_ROWS
    with cursor() as cur, cur.copy(sql, params) as copy:
        for block in copy:
            lines = (pending + bytes(block)).split(b"\n")
            pending = lines.pop()
            out = []
            for line in lines:
                if line.endswith(no_personal):
                    feature, tail = line[:len(line) - len(no_personal)], closing
                else:
                    feature, tail = _split_personal(line, names, maskers)
                out.append((feature.replace(b"\\\\", b"\\") if b"\\" in feature else feature) + tail)
            if out:
                yield (b"" if first else b",\n") + b",\n".join(out)
                first = False
                count += len(out)
                if export.progress and count >= next_report:
                    export.progress(count)
                    next_report += PROGRESS_ROWS
    yield b"\n]}\n"


def geojson_copy_sql(export: Export, *, complete: bool = False) -> tuple[str, dict, list]:
    """The COPY statement of the GeoJSON export: each line a feature without its closing braces, then the
    personal columns. `complete=True` closes the features in SQL with the personal fields unmasked (the
    benchmark's "straight out of PostgreSQL" baseline)."""
    layer = export.layer
    plain = [f for f in layer.fields if f[0] not in PERSONAL_FIELDS]
    personal = [f for f in layer.fields if f[0] in PERSONAL_FIELDS]
    properties = "json_build_object(" + ", ".join(f"'{n}', {e}" for n, e, _ in plain) + ")::text"
    geometry = ("ST_AsGeoJSON({geom}, 7)" if layer.geometry_type == "POINT"
                else "ST_AsGeoJSON(ST_ForcePolygonCCW({geom}), 7)").format(geom=layer.geometry_column)
    # The feature without the closing braces of its properties and of itself: Python closes them.
    feature = f"""'{{"type":"Feature","geometry":' || {geometry} || ',"properties":' || left({properties}, -1)"""
    if complete:
        feature += "".join(f""" || ',"{n}":' || coalesce(to_json({e})::text, 'null')""" for n, e, _ in personal)
        columns = feature + " || '}}'"
    else:
        columns = ", ".join([feature, *(e for _, e, _ in personal)])
    where, params = where_for(layer, export.flt, export.prefix)
    return f"COPY (SELECT {columns} FROM {layer.from_sql} WHERE {where}) TO STDOUT", params, personal


def _copy_value(raw: bytes) -> str | None:
    """One COPY text-format field: \\N is NULL; backslash escapes undone."""
    if raw == b"\\N":
        return None
    return raw.decode("unicode_escape").encode("latin-1").decode("utf-8") if b"\\" in raw else raw.decode("utf-8")


def _split_personal(line: bytes, names: list[str], maskers: list) -> tuple[bytes, bytes]:
    """Split a COPY line into the feature and its closing personal fields (masked unless maskers are None)."""
    feature, *raw = line.split(b"\t")
    tail = []
    for name, mask, value in zip(names, maskers, (_copy_value(v) for v in raw)):
        if value and mask:
            value = mask(value)
        tail.append(f',"{name}":{json.dumps(value, ensure_ascii=False)}')
    return feature, ("".join(tail) + "}}").encode()


def spreadsheet_safe(value):
    """Neutralise formula injection: text starting with = + - @ or a tab/CR is prefixed with an apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def csv_chunks(export: Export) -> Iterator[str]:
    """UTF-8 with BOM (Excel opens Chinese text correctly); incidents carry lon/lat, cells a WKT column."""
    out = io.StringIO()
    writer = csv.writer(out)
    header = export.layer.field_names + ([] if export.layer is INCIDENTS else ["wkt"])
    writer.writerow(header)
    yield "\ufeff" + out.getvalue()
    out.seek(0)
    out.truncate()
    geometry = None if export.layer is INCIDENTS else "ST_AsText({geom})"
    for count, row in enumerate(export.rows(geometry), 1):
        writer.writerow([spreadsheet_safe(v) for v in row])
        if count % 1000 == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


def kml_chunks(export: Export) -> Iterator[str]:
    layer = export.layer
    names = layer.field_names
    label = names.index(layer.label_field)
    yield kml.header(f"gridapp {layer.name}")
    buffer = []
    for row in export.rows("ST_AsKML({geom}, 7)"):
        *values, geometry = row
        buffer.append(kml.placemark(values[label], dict(zip(names, values)), geometry))
        if len(buffer) >= 500:
            yield "".join(buffer)
            buffer = []
    buffer.append(kml.FOOTER)
    yield "".join(buffer)


def write_gpkg(export: Export, path: str) -> int:
    layer = export.layer
    fields = [(n, kind) for n, _, kind in layer.fields]
    is_point = layer.geometry_type == "POINT"
    geometry = None if is_point else "ST_AsBinary(ST_Multi({geom}))"
    lon_at, lat_at = (layer.field_names.index("lon"), layer.field_names.index("lat")) if is_point else (0, 0)
    with GeoPackageWriter(path, layer.name, fields, layer.geometry_type, export.srs_id) as out:
        for row in export.rows(geometry):
            if is_point:
                out.add(row, point_wkb(row[lon_at], row[lat_at]))
            else:
                *values, wkb = row
                out.add(values, bytes(wkb))
    return out.count


def write_shapefile_zip(export: Export, path: str) -> int:
    """A zip of .shp/.shx/.dbf/.prj/.cpg plus fields.csv mapping the 10-byte names to the full ones."""
    layer = export.layer
    mapping = shp.short_field_names(layer.field_names)
    fields = [(mapping[n], kind) for n, _, kind in layer.fields]
    workdir = tempfile.mkdtemp(prefix="gridapp-shp-")
    try:
        base = os.path.join(workdir, layer.name)
        is_point = layer.geometry_type == "POINT"
        out = shp.writer(base, 1 if is_point else 5, fields)  # POINT or POLYGON
        kinds = [kind for _, _, kind in layer.fields]
        geometry = None if is_point else "ST_AsBinary(ST_ForcePolygonCW({geom}))"
        count = 0
        for row in export.rows(geometry):
            values = row if is_point else row[:-1]
            out.record(*[shp.fit_text(v) if k == "text" else v for v, k in zip(values, kinds)])
            if is_point:
                out.point(row[layer.field_names.index("lon")], row[layer.field_names.index("lat")])
            else:
                out.poly(_rings(shapely.from_wkb(bytes(row[-1]))))
            count += 1
        out.close()
        with open(base + ".prj", "w", encoding="ascii") as prj:
            prj.write(shp.PRJ[export.srs_id])
        with open(base + ".cpg", "w", encoding="ascii") as cpg:
            cpg.write(shp.CPG)
        with open(os.path.join(workdir, "fields.csv"), "w", encoding="utf-8-sig", newline="") as names:
            csv.writer(names).writerows([("shapefile_field", "field"), *((s, f) for f, s in mapping.items())])
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for name in sorted(os.listdir(workdir)):
                archive.write(os.path.join(workdir, name), name)
        return count
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _rings(geometry) -> list:
    """Shapefile polygon parts: each exterior ring (clockwise, as PostGIS forced) then its holes."""
    rings = []
    for polygon in getattr(geometry, "geoms", [geometry]):
        rings.append(list(polygon.exterior.coords))
        rings.extend(list(hole.coords) for hole in polygon.interiors)
    return rings


def write_xlsx(export: Export, path: str) -> int:
    """Write-only workbook (rows go to disk as they come); digit columns are text cells with format '@'."""
    book = Workbook(write_only=True)
    sheet = book.create_sheet(export.layer.name)
    names = export.layer.field_names
    sheet.append(names)
    text_at = {i for i, n in enumerate(names) if n in TEXT_COLUMNS}
    count = 0
    for row in export.rows(None):
        cells = []
        for i, value in enumerate(row):
            value = spreadsheet_safe(value)
            if i in text_at and value is not None:
                cell = WriteOnlyCell(sheet, value=str(value))
                cell.number_format = "@"
                cells.append(cell)
            else:
                cells.append(value)
        sheet.append(cells)
        count += 1
    book.save(path)
    return count


def as_bytes(chunk: str | bytes) -> bytes:
    return chunk if isinstance(chunk, bytes) else chunk.encode("utf-8")


STREAMED = {"geojson": geojson_chunks, "csv": csv_chunks, "kml": kml_chunks}
FILE_WRITERS = {"gpkg": write_gpkg, "shp": write_shapefile_zip, "xlsx": write_xlsx}


def write_file(export: Export, fmt: str, path: str) -> int:
    """Write any format to a file (export jobs); return the number of rows."""
    if fmt in FILE_WRITERS:
        return FILE_WRITERS[fmt](export, path)
    with open(path, "wb") as out:
        for chunk in STREAMED[fmt](export):
            out.write(as_bytes(chunk))
    return count_rows(export.layer, export.flt, export.prefix)
