"""Validate (and on request repair) polygons before they are stored."""

from dataclasses import dataclass, field

import shapely
from shapely.geometry import MultiPolygon, Polygon
from shapely.validation import explain_validity

from geo.errors import InvalidGeometry

POLYGONAL_TYPES = ("Polygon", "MultiPolygon")


@dataclass(frozen=True)
class ValidatedPolygon:
    """A valid, 2D, right-hand-rule polygon, and what was changed to get it."""

    geom: Polygon | MultiPolygon
    repaired: bool = False
    notes: list[str] = field(default_factory=list)


def validate_polygon(geom, repair=False):
    """Check a polygon for storage: non-empty, polygonal, 2D, valid and oriented (exterior CCW, holes CW).

    :param geom: shapely Polygon or MultiPolygon, lon, lat in EPSG:4326 (any CRS works).
    :param repair: fix an invalid polygon with shapely.make_valid instead of rejecting it.
    :returns: ValidatedPolygon; ``notes`` lists every change made.
    :raises InvalidGeometry: if the geometry is empty, not polygonal, invalid (and ``repair`` is false),
        or has no area left after repair; ``details["reason"]`` says why.
    """
    if geom is None or geom.is_empty:
        raise InvalidGeometry("The geometry is empty.", reason="empty")
    if geom.geom_type not in POLYGONAL_TYPES:
        raise InvalidGeometry(
            f"Expected a Polygon or MultiPolygon, got a {geom.geom_type}.", reason=f"unsupported type {geom.geom_type}"
        )
    notes = []
    if geom.has_z or shapely.has_m(geom):
        geom = shapely.force_2d(geom)
        notes.append("dropped Z/M coordinates")
    repaired = False
    if not geom.is_valid:
        reason = explain_validity(geom)
        if not repair:
            raise InvalidGeometry(f"The polygon is invalid: {reason}.", reason=reason)
        geom = _repair(geom, reason, notes)
        repaired = True
    return ValidatedPolygon(shapely.orient_polygons(geom, exterior_cw=False), repaired, notes)


def _repair(geom, reason, notes):
    fixed = shapely.make_valid(geom)
    # make_valid may return a GeometryCollection mixing polygons with collapsed lines and points;
    # only the areas are a cell, so flatten two levels and keep the polygons.
    parts = shapely.get_parts(shapely.get_parts(fixed))
    polygons = [p for p in parts if p.geom_type == "Polygon" and not p.is_empty]
    if not polygons:
        raise InvalidGeometry(f"The polygon has no area left after repair ({reason}).", reason=reason)
    notes.append(f"repaired: {reason}")
    if len(polygons) < len(parts):
        notes.append(f"dropped {len(parts) - len(polygons)} non-polygonal part(s) left by the repair")
    if len(polygons) == 1 and geom.geom_type == "Polygon":
        return polygons[0]
    if geom.geom_type == "Polygon":
        notes.append(f"split into {len(polygons)} polygons")
    return MultiPolygon(polygons)


def as_multipolygon(geom):
    """Wrap a Polygon as a one-part MultiPolygon (the stored type); return a MultiPolygon unchanged.

    :raises InvalidGeometry: if ``geom`` is neither.
    """
    if geom is not None and geom.geom_type == "MultiPolygon":
        return geom
    if geom is not None and geom.geom_type == "Polygon":
        return MultiPolygon([geom])
    kind = "nothing" if geom is None else geom.geom_type
    raise InvalidGeometry(f"Expected a Polygon or MultiPolygon, got {kind}.", reason=f"unsupported type {kind}")
