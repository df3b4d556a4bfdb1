"""Topology checks for a township's unit-grid cells: codes, validity, overlaps, gaps and slivers."""

import math
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

from geo.crs import local_metric_crs, project_to_metres, to_storage
from geo.grid import area_level_for_code, is_cell_code
from geo.validate import POLYGONAL_TYPES, validate_polygon

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class CellInput:
    """One cell to check; ``geom`` is in EPSG:4326 lon, lat and may be invalid or None."""

    code: str
    name: str | None
    geom: BaseGeometry | None


@dataclass(frozen=True)
class Thresholds:
    """Tolerances in square metres, so float noise at shared edges is not reported.

    overlap_m2: interior intersection of two cells (or a cell's area outside the boundary) above
        which it is a fault.
    gap_m2: uncovered area inside the township (a hole between cells) above which it is a gap.
    sliver_min_area_m2, sliver_max_thinness: a cell is a sliver if its area is below the minimum,
        or its thinness 4πA/P² (1 for a circle, 0.785 for a square) is below the maximum.
    """

    overlap_m2: float = 1.0
    gap_m2: float = 1.0
    sliver_min_area_m2: float = 50.0
    sliver_max_thinness: float = 0.05


@dataclass(frozen=True)
class Fault:
    """One topology problem; ``codes`` are the cells involved, ``details`` is JSON-ready."""

    kind: str
    severity: str
    codes: tuple[str, ...]
    message: str
    details: dict = field(default_factory=dict)


@dataclass
class TopologyReport:
    """Every fault found by check_cells; ``ok`` means no errors (warnings are allowed)."""

    faults: list[Fault] = field(default_factory=list)

    @property
    def errors(self):
        """Return the faults that block an import."""
        return [f for f in self.faults if f.severity == ERROR]

    @property
    def warnings(self):
        """Return the faults an operator may accept."""
        return [f for f in self.faults if f.severity == WARNING]

    @property
    def ok(self):
        """Return whether there are no errors."""
        return not self.errors

    def as_dict(self):
        """Return the report as a JSON-serialisable dict."""
        return {
            "ok": self.ok,
            "error_count": len(self.errors),
            "warning_count": len(self.warnings),
            "faults": [{**asdict(f), "codes": list(f.codes)} for f in self.faults],
        }


def check_cells(cells, township_code, boundary=None, thresholds=Thresholds()):
    """Check a township's cells for bad or duplicate codes, invalid geometries, overlaps, gaps and slivers.

    Areas are measured in m² in a Lambert equal-area CRS centred on the cells' extent. Overlap and
    sliver checks skip invalid geometries, which are reported once as ``invalid_geometry``.

    :param cells: CellInput list, geometries in EPSG:4326 lon, lat.
    :param township_code: the 9-digit township code every cell code must start with.
    :param boundary: optional township Polygon/MultiPolygon in EPSG:4326; cells outside it are
        errors and uncovered parts of it are gaps.
    :param thresholds: tolerances, see Thresholds.
    :returns: TopologyReport.
    :raises ValueError: if ``township_code`` is not a 9-digit code.
    :raises InvalidGeometry: if ``boundary`` is not a valid polygon.
    """
    if area_level_for_code(township_code) != "township":
        raise ValueError(f"Not a 9-digit township code: {township_code!r}")
    if boundary is not None:
        boundary = validate_polygon(boundary).geom
    codes = np.array([c.code for c in cells], dtype=object)
    geoms = np.array([c.geom for c in cells], dtype=object)
    valid, invalid_faults = _validity(geoms, codes)
    faults = _code_faults(cells, township_code) + invalid_faults
    if valid.any():
        faults += _geometry_faults(codes[valid], shapely.force_2d(geoms[valid]), boundary, thresholds)
    return TopologyReport(faults)


def _code_faults(cells, township_code):
    faults = []
    for code, count in Counter(c.code for c in cells).items():
        if count > 1:
            message = f"{count} cells share the code {code}."
            faults.append(Fault("duplicate_code", ERROR, (code,), message, {"count": count}))
    for cell in cells:
        if not is_cell_code(cell.code):
            message = f"{cell.code!r} is not a 15-digit unit-grid code."
            faults.append(Fault("bad_code", ERROR, (cell.code,), message))
        elif not cell.code.startswith(township_code):
            message = f"{cell.code} does not belong to township {township_code}."
            faults.append(Fault("outside_township", ERROR, (cell.code,), message))
    return faults


def _validity(geoms, codes):
    faults = []
    polygonal = np.array([g is not None and g.geom_type in POLYGONAL_TYPES for g in geoms], dtype=bool)
    valid = polygonal.copy()
    valid[polygonal] = shapely.is_valid(geoms[polygonal]) & ~shapely.is_empty(geoms[polygonal])
    for i in np.flatnonzero(~valid):
        geom = geoms[i]
        if geom is None or geom.is_empty:
            reason = "empty"
        elif not polygonal[i]:
            reason = f"unsupported type {geom.geom_type}"
        else:
            reason = shapely.is_valid_reason(geom)
        message = f"Cell {codes[i]} is invalid: {reason}."
        faults.append(Fault("invalid_geometry", ERROR, (codes[i],), message, {"reason": reason}))
    return valid, faults


def _geometry_faults(codes, geoms, boundary, thresholds):
    # The centre of the cells' extent is close enough to their centroid, and an equal-area
    # projection makes every area exact wherever the centre falls.
    west, south, east, north = shapely.total_bounds(geoms)
    metric_crs = local_metric_crs((west + east) / 2, (south + north) / 2)
    cells = project_to_metres(geoms, metric_crs)
    boundary_m = None if boundary is None else project_to_metres(boundary, metric_crs)
    tree = shapely.STRtree(cells)
    return [
        *_sliver_faults(codes, cells, thresholds),
        *_overlap_faults(codes, cells, tree, thresholds),
        *([] if boundary_m is None else _outside_faults(codes, cells, boundary_m, thresholds)),
        *_gap_faults(codes, cells, tree, boundary_m, metric_crs, thresholds),
    ]


def _sliver_faults(codes, cells, thresholds):
    area = shapely.area(cells)
    thinness = 4 * math.pi * area / shapely.length(cells) ** 2
    faults = []
    for i in np.flatnonzero((area < thresholds.sliver_min_area_m2) | (thinness < thresholds.sliver_max_thinness)):
        message = f"Cell {codes[i]} is a sliver ({area[i]:.1f} m², thinness {thinness[i]:.3f})."
        details = {"area_m2": round(float(area[i]), 2), "thinness": round(float(thinness[i]), 4)}
        faults.append(Fault("sliver", WARNING, (codes[i],), message, details))
    return faults


def _overlap_faults(codes, cells, tree, thresholds):
    left, right = tree.query(cells, predicate="intersects")
    pairs = left < right
    left, right = left[pairs], right[pairs]
    # Most intersecting pairs only share an edge; the DE-9IM test is much cheaper than computing
    # an intersection, so only pairs whose interiors share an area get one.
    overlapping = shapely.relate_pattern(cells[left], cells[right], "2********")
    left, right = left[overlapping], right[overlapping]
    faults = []
    for i, j, a in zip(left, right, shapely.area(shapely.intersection(cells[left], cells[right]))):
        if a > thresholds.overlap_m2:
            message = f"Cells {codes[i]} and {codes[j]} overlap by {a:.1f} m²."
            faults.append(Fault("overlap", ERROR, (codes[i], codes[j]), message, {"area_m2": round(float(a), 2)}))
    return faults


def _outside_faults(codes, cells, boundary_m, thresholds):
    shapely.prepare(boundary_m)
    outside = np.flatnonzero(~shapely.within(cells, boundary_m))
    faults = []
    for i, a in zip(outside, shapely.area(shapely.difference(cells[outside], boundary_m))):
        if a > thresholds.overlap_m2:
            message = f"{a:.1f} m² of cell {codes[i]} lies outside the township boundary."
            faults.append(Fault("outside_township", ERROR, (codes[i],), message, {"area_m2": round(float(a), 2)}))
    return faults


def _gap_faults(codes, cells, tree, boundary_m, metric_crs, thresholds):
    union = shapely.union_all(cells)
    if boundary_m is None:
        gaps = [shapely.Polygon(ring) for poly in shapely.get_parts(union) for ring in poly.interiors]
    else:
        gaps = shapely.get_parts(shapely.difference(boundary_m, union))
    faults = []
    for gap in gaps:
        a = gap.area
        if a <= thresholds.gap_m2:
            continue
        lon, lat = shapely.get_coordinates(to_storage(gap.point_on_surface(), metric_crs))[0]
        neighbours = tuple(sorted(codes[tree.query(gap, predicate="intersects")]))
        message = f"{a:.1f} m² near ({lon:.6f}, {lat:.6f}) is covered by no cell."
        details = {"area_m2": round(float(a), 2), "lon": round(float(lon), 7), "lat": round(float(lat), 7)}
        faults.append(Fault("gap", WARNING, neighbours, message, details))
    return faults
