import pytest
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon

from geo.errors import InvalidGeometry
from geo.validate import as_multipolygon, validate_polygon

BOW_TIE = Polygon([(120.0, 30.0), (120.01, 30.01), (120.01, 30.0), (120.0, 30.01), (120.0, 30.0)])
SQUARE = shapely.box(120.0, 30.0, 120.01, 30.01)
# A spike back along the bottom edge collapses to a line that make_valid keeps alongside the area.
SPIKED = Polygon([(0, 0), (10, 0), (20, 0), (10, 0), (10, 10), (0, 10), (0, 0)])


def test_valid_polygon_passes_unchanged():
    result = validate_polygon(SQUARE)
    assert result.geom.equals_exact(shapely.orient_polygons(SQUARE), 1e-12)
    assert not result.repaired
    assert result.notes == []


def test_bow_tie_is_rejected_with_reason():
    with pytest.raises(InvalidGeometry) as excinfo:
        validate_polygon(BOW_TIE)
    assert excinfo.value.code == "geo.invalid_geometry"
    assert "Self-intersection" in excinfo.value.details["reason"]


def test_bow_tie_is_repaired_on_request():
    result = validate_polygon(BOW_TIE, repair=True)
    assert result.geom.is_valid
    assert result.repaired
    assert result.geom.geom_type == "MultiPolygon"
    # Two triangles, each with base 0.01 and height 0.005 (the crossing point is the centre).
    assert result.geom.area == pytest.approx(2 * 0.5 * 0.01 * 0.005, rel=1e-9)
    assert any("Self-intersection" in note for note in result.notes)


def test_repair_drops_collapsed_parts():
    assert shapely.make_valid(SPIKED).geom_type == "GeometryCollection"
    result = validate_polygon(SPIKED, repair=True)
    assert result.geom.is_valid
    assert result.geom.geom_type == "Polygon"
    assert result.geom.area == pytest.approx(100.0)
    assert any("non-polygonal" in note for note in result.notes)


def test_repair_keeps_multipolygon_type():
    result = validate_polygon(MultiPolygon([SPIKED]), repair=True)
    assert result.geom.geom_type == "MultiPolygon"


def test_z_is_stripped():
    result = validate_polygon(Polygon([(120, 30, 5), (121, 30, 5), (121, 31, 5), (120, 30, 5)]))
    assert not result.geom.has_z
    assert "dropped Z/M coordinates" in result.notes
    assert not result.repaired


def test_clockwise_exterior_and_ccw_hole_are_reoriented():
    shell = [(0, 0), (0, 10), (10, 10), (10, 0), (0, 0)]  # clockwise
    hole = [(2, 2), (8, 2), (8, 8), (2, 8), (2, 2)]  # counter-clockwise
    polygon = Polygon(shell, [hole])
    assert not polygon.exterior.is_ccw
    result = validate_polygon(polygon).geom
    assert result.exterior.is_ccw
    assert not result.interiors[0].is_ccw
    assert result.equals(polygon)


def test_multipolygon_parts_are_reoriented():
    clockwise = Polygon([(0, 0), (0, 1), (1, 1), (1, 0), (0, 0)])
    result = validate_polygon(MultiPolygon([clockwise, shapely.box(2, 0, 3, 1, ccw=False)])).geom
    assert result.geom_type == "MultiPolygon"
    assert all(part.exterior.is_ccw for part in result.geoms)


@pytest.mark.parametrize("geom", [None, Polygon(), MultiPolygon()])
def test_empty_is_rejected(geom):
    with pytest.raises(InvalidGeometry) as excinfo:
        validate_polygon(geom)
    assert excinfo.value.details["reason"] == "empty"


@pytest.mark.parametrize("geom", [LineString([(0, 0), (1, 1)]), Point(0, 0)])
def test_non_polygons_are_rejected(geom):
    with pytest.raises(InvalidGeometry) as excinfo:
        validate_polygon(geom)
    assert geom.geom_type in excinfo.value.details["reason"]


def test_as_multipolygon():
    wrapped = as_multipolygon(SQUARE)
    assert wrapped.geom_type == "MultiPolygon"
    assert wrapped.geoms[0].equals_exact(SQUARE, 1e-12)
    multi = MultiPolygon([SQUARE])
    assert as_multipolygon(multi) is multi
    with pytest.raises(InvalidGeometry):
        as_multipolygon(Point(0, 0))
