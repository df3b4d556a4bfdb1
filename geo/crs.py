"""Coordinate reference systems: phone point conversions (WGS84, CGCS2000, GCJ-02, BD-09) and reprojection.

Every function takes and returns coordinates in (lon, lat) order, in degrees, unless it says otherwise.
"""

import functools
import math

import pyproj
import shapely
from pyproj.exceptions import CRSError

from geo.errors import OutsideChina, UnsupportedCRS

STORAGE_SRID = 4326
POINT_CRS = ("wgs84", "cgcs2000", "gcj02", "bd09")

_POINT_CRS_ALIASES = {"epsg:4326": "wgs84", "epsg:4490": "cgcs2000"}
# CGCS2000 equals WGS84 at metre level (CGCS2000 is fixed at epoch 2000.0, WGS84 moves with the
# plate by a few cm a year), below both phone GPS accuracy and grid survey tolerance, so EPSG:4490
# coordinates are treated as WGS84 unchanged.
_STORAGE_EQUIVALENT_EPSG = (4326, 4490)

# Krasovsky 1940 ellipsoid, which the GCJ-02 obfuscation is defined on.
_KRASOVSKY_A = 6378245.0
_KRASOVSKY_EE = 0.00669342162296594323
_BD_X_PI = math.pi * 3000.0 / 180.0
_GCJ_INVERSE_TOLERANCE_DEG = 1e-9
_GCJ_INVERSE_MAX_ITERATIONS = 30


def in_china(lon, lat):
    """Return whether (lon, lat) lies in the rough China bounding box where GCJ-02 is defined."""
    return 72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271


def _require_china(lon, lat):
    if not in_china(lon, lat):
        raise OutsideChina(
            f"GCJ-02/BD-09 are only defined inside China; ({lon}, {lat}) is outside.", lon=lon, lat=lat
        )


def _gcj_offset(lon, lat):
    x, y = lon - 105.0, lat - 35.0
    common = (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    dlat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x)) + common
    dlat += (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
    dlat += (160.0 * math.sin(y / 12.0 * math.pi) + 320.0 * math.sin(y * math.pi / 30.0)) * 2.0 / 3.0
    dlon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x)) + common
    dlon += (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
    dlon += (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2.0 / 3.0
    rad_lat = lat / 180.0 * math.pi
    magic = 1.0 - _KRASOVSKY_EE * math.sin(rad_lat) ** 2
    sqrt_magic = math.sqrt(magic)
    dlat = dlat * 180.0 / ((_KRASOVSKY_A * (1.0 - _KRASOVSKY_EE)) / (magic * sqrt_magic) * math.pi)
    dlon = dlon * 180.0 / (_KRASOVSKY_A / sqrt_magic * math.cos(rad_lat) * math.pi)
    return dlon, dlat


def wgs84_to_gcj02(lon, lat):
    """Convert a WGS84 point to GCJ-02 (Amap/Tencent).

    :param lon: longitude in degrees, WGS84.
    :param lat: latitude in degrees, WGS84.
    :returns: (lon, lat) in GCJ-02 degrees.
    :raises OutsideChina: if the point is outside China's bounding box.
    """
    _require_china(lon, lat)
    dlon, dlat = _gcj_offset(lon, lat)
    return lon + dlon, lat + dlat


def gcj02_to_wgs84(lon, lat):
    """Convert a GCJ-02 point back to WGS84 by fixed-point iteration (error well under 1e-7 degrees).

    :param lon: longitude in degrees, GCJ-02.
    :param lat: latitude in degrees, GCJ-02.
    :returns: (lon, lat) in WGS84 degrees.
    :raises OutsideChina: if the point is outside China's bounding box.
    """
    _require_china(lon, lat)
    # The offset changes slowly with position, so subtracting the offset at the current guess
    # converges in a handful of steps; the one-step inverse most libraries use is off by metres.
    wlon, wlat = lon, lat
    for _ in range(_GCJ_INVERSE_MAX_ITERATIONS):
        dlon, dlat = _gcj_offset(wlon, wlat)
        err_lon, err_lat = wlon + dlon - lon, wlat + dlat - lat
        wlon, wlat = wlon - err_lon, wlat - err_lat
        if abs(err_lon) < _GCJ_INVERSE_TOLERANCE_DEG and abs(err_lat) < _GCJ_INVERSE_TOLERANCE_DEG:
            break
    return wlon, wlat


def gcj02_to_bd09(lon, lat):
    """Convert a GCJ-02 point to BD-09 (Baidu bd09ll).

    :param lon: longitude in degrees, GCJ-02.
    :param lat: latitude in degrees, GCJ-02.
    :returns: (lon, lat) in BD-09 degrees.
    :raises OutsideChina: if the point is outside China's bounding box.
    """
    _require_china(lon, lat)
    z = math.hypot(lon, lat) + 0.00002 * math.sin(lat * _BD_X_PI)
    theta = math.atan2(lat, lon) + 0.000003 * math.cos(lon * _BD_X_PI)
    return z * math.cos(theta) + 0.0065, z * math.sin(theta) + 0.006


def bd09_to_gcj02(lon, lat):
    """Convert a BD-09 (Baidu bd09ll) point to GCJ-02 with the standard closed-form inverse.

    :param lon: longitude in degrees, BD-09.
    :param lat: latitude in degrees, BD-09.
    :returns: (lon, lat) in GCJ-02 degrees.
    :raises OutsideChina: if the point is outside China's bounding box.
    """
    _require_china(lon, lat)
    x, y = lon - 0.0065, lat - 0.006
    z = math.hypot(x, y) - 0.00002 * math.sin(y * _BD_X_PI)
    theta = math.atan2(y, x) - 0.000003 * math.cos(x * _BD_X_PI)
    return z * math.cos(theta), z * math.sin(theta)


def _point_crs(crs):
    name = str(crs).strip().lower()
    name = _POINT_CRS_ALIASES.get(name, name)
    if name not in POINT_CRS:
        raise UnsupportedCRS(
            f"Unsupported point CRS {crs!r}; expected one of {', '.join(POINT_CRS)}.", crs=str(crs)
        )
    return name


def to_wgs84(lon, lat, crs):
    """Convert a point reported by a phone in ``crs`` to WGS84 (lon, lat) for storage.

    :param crs: one of POINT_CRS (any case), "EPSG:4326" or "EPSG:4490".
    :returns: (lon, lat) in EPSG:4326 degrees.
    :raises UnsupportedCRS: if ``crs`` is not a known point CRS.
    :raises OutsideChina: for GCJ-02/BD-09 points outside China.
    """
    name = _point_crs(crs)
    if name == "gcj02":
        return gcj02_to_wgs84(lon, lat)
    if name == "bd09":
        return gcj02_to_wgs84(*bd09_to_gcj02(lon, lat))
    return float(lon), float(lat)


def from_wgs84(lon, lat, crs):
    """Convert a WGS84 point to ``crs`` for display on a provider's map tiles.

    :param crs: one of POINT_CRS (any case), "EPSG:4326" or "EPSG:4490".
    :returns: (lon, lat) in degrees of ``crs``.
    :raises UnsupportedCRS: if ``crs`` is not a known point CRS.
    :raises OutsideChina: for GCJ-02/BD-09 targets when the point is outside China.
    """
    name = _point_crs(crs)
    if name == "gcj02":
        return wgs84_to_gcj02(lon, lat)
    if name == "bd09":
        return gcj02_to_bd09(*wgs84_to_gcj02(lon, lat))
    return float(lon), float(lat)


def resolve_crs(value):
    """Parse a CRS given as "EPSG:4490", "4490", 4490, WKT, a PROJ string or a pyproj.CRS.

    :returns: the pyproj.CRS.
    :raises UnsupportedCRS: if pyproj cannot parse ``value``.
    """
    if isinstance(value, pyproj.CRS):
        return value
    text = str(value).strip()
    if text.isdigit():
        text = f"EPSG:{text}"
    try:
        return pyproj.CRS.from_user_input(text)
    except CRSError as exc:
        raise UnsupportedCRS(f"Cannot understand the CRS {str(value)[:200]!r}: {exc}", crs=str(value)[:200]) from exc


@functools.lru_cache(maxsize=64)
def _transformer(src_wkt, dst_wkt):
    # Keyed by WKT text so "4549", "EPSG:4549" and the CRS object share one transformer; sharing
    # it across threads is fine because Transformer is thread-safe since pyproj 3.1.
    return pyproj.Transformer.from_crs(
        pyproj.CRS.from_wkt(src_wkt), pyproj.CRS.from_wkt(dst_wkt), always_xy=True
    )


def _reproject(geom, src, dst):
    transformer = _transformer(src.to_wkt(), dst.to_wkt())
    # include_z=None keeps Z on geometries that have it (and runs pyproj on it) instead of dropping it.
    return shapely.transform(geom, transformer.transform, include_z=None, interleaved=False)


def to_storage(geom, src_crs):
    """Reproject a geometry (or array of geometries) from ``src_crs`` to EPSG:4326 lon, lat.

    :param geom: shapely geometry or array of them, in ``src_crs`` axis order x, y (easting, northing or lon, lat).
    :param src_crs: anything resolve_crs accepts, including projected CRS such as CGCS2000 Gauss-Krüger zones.
    :returns: the geometry in EPSG:4326, lon, lat degrees.
    :raises UnsupportedCRS: if ``src_crs`` cannot be parsed.
    """
    src = resolve_crs(src_crs)
    if src.to_epsg() in _STORAGE_EQUIVALENT_EPSG:
        return geom
    return _reproject(geom, src, pyproj.CRS.from_epsg(STORAGE_SRID))


def local_metric_crs(lon, lat):
    """Build a Lambert azimuthal equal-area CRS in metres centred on (lon, lat), for areas and lengths."""
    return pyproj.CRS.from_proj4(f"+proj=laea +lat_0={lat} +lon_0={lon} +datum=WGS84 +units=m +no_defs +type=crs")


def project_to_metres(geom, crs):
    """Reproject a geometry (or array of them) from EPSG:4326 lon, lat to the metric ``crs``.

    :param crs: usually from local_metric_crs; x, y in metres.
    """
    return _reproject(geom, pyproj.CRS.from_epsg(STORAGE_SRID), resolve_crs(crs))
