"""Measurements on the WGS84 ellipsoid."""
from pyproj import Geod

_GEOD = Geod(ellps="WGS84")


def geodesic_area_m2(geom) -> float:
    """Return the area of a (multi)polygon in m², measured on the WGS84 ellipsoid.

    :param geom: shapely geometry in lon, lat (EPSG:4326).
    """
    area, _perimeter = _GEOD.geometry_area_perimeter(geom)
    return abs(area)
