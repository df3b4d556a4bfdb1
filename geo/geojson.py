"""Parse GeoJSON geometries and build RFC 7946 features (lon, lat in EPSG:4326)."""

import math

import numpy as np
import shapely
from shapely.geometry import mapping, shape

from geo.errors import InvalidGeometry

COORDINATE_DECIMALS = 7  # 1e-7 degrees is about 1 cm, finer than any survey we store

# How deeply each geometry type nests positions in "coordinates".
_POSITION_DEPTH = {
    "Point": 0,
    "MultiPoint": 1,
    "LineString": 1,
    "MultiLineString": 2,
    "Polygon": 2,
    "MultiPolygon": 3,
}


def _malformed(reason):
    return InvalidGeometry(f"Malformed GeoJSON geometry: {reason}.", reason=reason)


def _check_coordinates(value, depth, where):
    if not isinstance(value, (list, tuple)):
        raise _malformed(f"{where} must be an array")
    if depth == 0:
        if len(value) not in (2, 3):
            raise _malformed(f"{where} must have 2 or 3 numbers, has {len(value)}")
        for number in value:
            # bool is an int subclass; a JSON true is not a coordinate.
            if isinstance(number, bool) or not isinstance(number, (int, float)):
                raise _malformed(f"{where} has a non-numeric value {number!r}")
            if not math.isfinite(number):
                raise _malformed(f"{where} has a non-finite value {number!r}")
        return
    for i, item in enumerate(value):
        _check_coordinates(item, depth - 1, f"{where}[{i}]")


def _check_geometry(obj, where="geometry"):
    if not isinstance(obj, dict):
        raise _malformed(f"{where} must be an object")
    kind = obj.get("type")
    if kind is None:
        raise _malformed(f"{where} has no type")
    if kind == "GeometryCollection":
        members = obj.get("geometries")
        if not isinstance(members, list):
            raise _malformed(f"{where} has no geometries array")
        for i, member in enumerate(members):
            _check_geometry(member, f"{where}.geometries[{i}]")
        return
    if kind not in _POSITION_DEPTH:
        raise _malformed(f"{where} has unknown type {kind!r}")
    if "coordinates" not in obj:
        raise _malformed(f"{where} has no coordinates")
    _check_coordinates(obj["coordinates"], _POSITION_DEPTH[kind], f"{where}.coordinates")


def geometry_from_geojson(obj):
    """Build a shapely geometry from a GeoJSON geometry object, or from a Feature's geometry.

    :param obj: parsed JSON (dict), positions in lon, lat (EPSG:4326) order.
    :returns: the shapely geometry; it is not validated (see geo.validate).
    :raises InvalidGeometry: if the object is malformed: missing or unknown type, missing or
        badly nested coordinates, non-numeric values, or rings too short; ``details["reason"]`` says which.
    """
    if isinstance(obj, dict) and obj.get("type") == "Feature":
        obj = obj.get("geometry")
        if obj is None:
            raise _malformed("the feature has no geometry")
    _check_geometry(obj)
    try:
        return shape(obj)
    except (ValueError, TypeError, shapely.errors.GEOSException) as exc:
        # Well-nested numbers can still be unbuildable, e.g. a ring of fewer than four positions.
        raise _malformed(str(exc)) from exc


def _rounded(geom):
    return shapely.transform(geom, lambda xy: np.round(xy, COORDINATE_DECIMALS), include_z=None)


def feature(geom, properties, id=None):
    """Build an RFC 7946 Feature dict with coordinates rounded to 7 decimals and polygons right-hand oriented.

    :param geom: shapely geometry in EPSG:4326 lon, lat, or None for a feature without geometry.
    :param properties: JSON-serialisable mapping, or None.
    :param id: optional feature id (string or number).
    :returns: a dict ready for json.dumps.
    """
    result = {
        "type": "Feature",
        "geometry": None if geom is None else mapping(_rounded(shapely.orient_polygons(geom))),
        "properties": dict(properties or {}),
    }
    if id is not None:
        result["id"] = id
    return result


def feature_collection(features, **extra):
    """Build an RFC 7946 FeatureCollection dict (never with a ``crs`` member; EPSG:4326 is implied).

    :param features: Feature dicts, e.g. from feature().
    :param extra: additional top-level members such as ``bbox`` or paging links.
    """
    return {"type": "FeatureCollection", "features": list(features), **extra}
