"""Shapefile details: field names of at most 10 bytes (with the mapping kept), UTF-8 `.cpg`, DBF limits."""
import re

import shapefile  # pyshp

MAX_NAME_BYTES = 10
MAX_TEXT_BYTES = 254  # a DBF character field holds at most 254 bytes
CPG = "UTF-8"
PRJ = {  # ESRI WKT1, what ArcGIS writes
    4326: 'GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984",SPHEROID["WGS_1984",6378137.0,298.257223563]],'
          'PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]]',
    4490: 'GEOGCS["GCS_China_Geodetic_Coordinate_System_2000",DATUM["D_China_2000",'
          'SPHEROID["CGCS2000",6378137.0,298.257222101]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]]',
}


def short_field_names(names: list[str]) -> dict[str, str]:
    """Map each field name to a unique name of at most 10 bytes (DBF's limit), keeping order.

    Clashes after truncation get a numeric suffix: case_number, case_numbers → case_numbe, case_num_1.
    """
    mapping, taken = {}, set()
    for name in names:
        base = re.sub(r"[^A-Za-z0-9_]", "_", name)[:MAX_NAME_BYTES] or "field"
        short, n = base, 0
        while short.lower() in taken:
            n += 1
            suffix = f"_{n}"
            short = base[:MAX_NAME_BYTES - len(suffix)] + suffix
        taken.add(short.lower())
        mapping[name] = short
    return mapping


def fit_text(value: str | None, limit: int = MAX_TEXT_BYTES) -> str | None:
    """Cut text to fit `limit` UTF-8 bytes without splitting a character."""
    if value is None:
        return None
    data = value.encode("utf-8")
    return value if len(data) <= limit else data[:limit].decode("utf-8", "ignore")


def writer(base_path: str, shape_type: int, fields: list[tuple[str, str]]) -> shapefile.Writer:
    """Open a pyshp writer with UTF-8 attributes; `fields` are (short name, text|integer|real)."""
    out = shapefile.Writer(base_path, shapeType=shape_type, encoding="utf-8")
    for name, kind in fields:
        if kind == "integer":
            out.field(name, "N", size=18, decimal=0)
        elif kind == "real":
            out.field(name, "N", size=24, decimal=6)
        else:
            out.field(name, "C", size=MAX_TEXT_BYTES)
    return out
