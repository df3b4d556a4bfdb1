import json

import pytest
import shapely
from shapely.geometry import Point, Polygon

from geo.errors import InvalidGeometry
from geo.geojson import feature, feature_collection, geometry_from_geojson

SQUARE = {"type": "Polygon", "coordinates": [[[120, 30], [120.01, 30], [120.01, 30.01], [120, 30.01], [120, 30]]]}


def test_polygon_is_parsed():
    geom = geometry_from_geojson(SQUARE)
    expected = shapely.box(120, 30, 120.01, 30.01)
    assert shapely.normalize(geom).equals_exact(shapely.normalize(expected), 1e-12)


def test_feature_geometry_is_parsed():
    geom = geometry_from_geojson({"type": "Feature", "properties": {}, "geometry": SQUARE})
    assert geom.geom_type == "Polygon"


@pytest.mark.parametrize(
    "obj",
    [
        {"type": "Point", "coordinates": [120, 30, 5]},
        {"type": "MultiPolygon", "coordinates": [SQUARE["coordinates"]]},
        {"type": "GeometryCollection", "geometries": [SQUARE, {"type": "Point", "coordinates": [1, 2]}]},
        {"type": "Polygon", "coordinates": []},
    ],
)
def test_other_shapes_are_parsed(obj):
    assert geometry_from_geojson(obj).geom_type == obj["type"]


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"coordinates": [1, 2]}, "no type"),
        ({"type": "Circle", "coordinates": [1, 2]}, "unknown type"),
        ({"type": "Point"}, "no coordinates"),
        ({"type": "Point", "coordinates": [1]}, "2 or 3 numbers"),
        ({"type": "Point", "coordinates": ["120", "30"]}, "non-numeric"),
        ({"type": "Point", "coordinates": [True, 30]}, "non-numeric"),
        ({"type": "Point", "coordinates": [float("nan"), 30]}, "non-finite"),
        ({"type": "Polygon", "coordinates": [[120, 30], [121, 30]]}, "must be an array"),
        ({"type": "Polygon", "coordinates": [[[120, 30], [121, 30]]]}, "at least 4 coordinates"),
        ({"type": "GeometryCollection"}, "no geometries"),
        ({"type": "Feature", "geometry": None}, "no geometry"),
        ([1, 2], "must be an object"),
    ],
)
def test_malformed_input_is_rejected_with_reason(obj, reason):
    with pytest.raises(InvalidGeometry) as excinfo:
        geometry_from_geojson(obj)
    assert excinfo.value.code == "geo.invalid_geometry"
    assert reason in excinfo.value.details["reason"]


def test_feature_rounds_to_seven_decimals_and_orients():
    clockwise = Polygon([(120.123456789, 30.0), (120.0, 30.1), (120.1, 30.1), (120.123456789, 30.0)])
    assert not clockwise.exterior.is_ccw
    result = feature(clockwise, {"name": "东风"}, id="330106001001001")
    assert result["type"] == "Feature"
    assert result["id"] == "330106001001001"
    assert result["properties"] == {"name": "东风"}
    ring = result["geometry"]["coordinates"][0]
    assert ring[0] == (120.1234568, 30.0)
    parsed = geometry_from_geojson(result["geometry"])
    assert parsed.exterior.is_ccw
    assert parsed.equals_exact(clockwise.reverse(), 1e-7)


def test_feature_without_geometry_or_id():
    result = feature(None, None)
    assert result == {"type": "Feature", "geometry": None, "properties": {}}


def test_feature_collection_is_rfc7946():
    collection = feature_collection([feature(Point(120, 30), {})], numberMatched=1)
    assert collection["type"] == "FeatureCollection"
    assert collection["numberMatched"] == 1
    assert "crs" not in collection
    geometry = json.loads(json.dumps(collection))["features"][0]["geometry"]
    assert geometry == {"type": "Point", "coordinates": [120.0, 30.0]}


def test_feature_collection_of_nothing():
    assert feature_collection([]) == {"type": "FeatureCollection", "features": []}
