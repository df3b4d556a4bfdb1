import pytest
import shapely

from geo.crs import local_metric_crs, project_to_metres
from geo.measure import geodesic_area_m2


def test_geodesic_area_agrees_with_the_local_equal_area_projection():
    cell = shapely.box(120.0, 30.0, 120.001, 30.001)
    projected = project_to_metres(cell, local_metric_crs(120.0005, 30.0005)).area
    assert geodesic_area_m2(cell) == pytest.approx(projected, rel=1e-6)


def test_geodesic_area_ignores_orientation():
    cell = shapely.box(120.0, 30.0, 120.001, 30.001)
    assert geodesic_area_m2(cell.reverse()) == pytest.approx(geodesic_area_m2(cell))
