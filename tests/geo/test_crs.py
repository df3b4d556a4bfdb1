import math

import numpy as np
import pyproj
import pytest
import shapely

from geo import crs
from geo.errors import OutsideChina, UnsupportedCRS

# WGS84 -> GCJ-02 reference pairs (lon, lat), with where each comes from.
WGS_TO_GCJ = [
    # coord-convert (PyPI) documentation, quoted in DOMAIN.md section 3.2; given to 8 decimals.
    ((120.0, 40.0), (120.00567568, 40.00130479), 1e-8),
    # wandergis/coordtransform README, "wgs84togcj02(116.404, 39.915)".
    ((116.404, 39.915), (116.41024449916938, 39.91640428150164), 1e-9),
    # googollee/eviltransform go/transform_test.go: Shanghai, Shenzhen, Beijing (lat, lng swapped here).
    ((121.5272106, 31.1774276), (121.531541859215, 31.17530398364597), 1e-9),
    ((113.912316, 22.543847), (113.9171764808363, 22.540796131694766), 1e-9),
    ((116.377817, 39.911954), (116.38404722455657, 39.91334545536069), 1e-9),
]

# Cities spread over China, to check behaviour across the whole area of use.
CITIES = [
    (116.40, 39.90),  # Beijing
    (121.47, 31.23),  # Shanghai
    (87.60, 43.80),  # Urumqi
    (91.10, 29.65),  # Lhasa
    (126.60, 45.75),  # Harbin
    (110.30, 20.00),  # Haikou
    (102.70, 25.00),  # Kunming
    (113.26, 23.13),  # Guangzhou
]


def close(a, b, tol):
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(("wgs", "gcj", "tol"), WGS_TO_GCJ)
def test_wgs84_to_gcj02_matches_published_values(wgs, gcj, tol):
    assert close(crs.wgs84_to_gcj02(*wgs), gcj, tol)


@pytest.mark.parametrize(("wgs", "gcj", "tol"), WGS_TO_GCJ)
def test_gcj02_to_wgs84_inverts_published_values(wgs, gcj, tol):
    # eviltransform's own exact inverse only promises 0.5 m; ours iterates to 1e-9 degrees.
    assert close(crs.gcj02_to_wgs84(*gcj), wgs, max(tol, 1e-8))


def test_bd09_matches_published_values():
    # wandergis/coordtransform README: gcj02tobd09 and bd09togcj02 of (116.404, 39.915).
    assert close(crs.gcj02_to_bd09(116.404, 39.915), (116.41036949371029, 39.92133699351021), 1e-9)
    assert close(crs.bd09_to_gcj02(116.404, 39.915), (116.39762729119315, 39.90865673957631), 1e-9)


@pytest.mark.parametrize("point", CITIES)
def test_gcj02_round_trip(point):
    assert close(crs.gcj02_to_wgs84(*crs.wgs84_to_gcj02(*point)), point, 1e-7)


@pytest.mark.parametrize("point", CITIES)
def test_bd09_round_trip(point):
    # The standard closed-form BD-09 inverse is itself approximate, to about 1e-6 degrees (0.1 m).
    assert close(crs.to_wgs84(*crs.from_wgs84(*point, "bd09"), "bd09"), point, 2e-6)


@pytest.mark.parametrize("point", CITIES)
def test_gcj02_shift_is_hundreds_of_metres(point):
    distance = pyproj.Geod(ellps="WGS84").inv(*point, *crs.wgs84_to_gcj02(*point))[2]
    assert 100 <= distance <= 700


@pytest.mark.parametrize("name", ["wgs84", "WGS84", "EPSG:4326", "epsg:4326", "cgcs2000", "EPSG:4490"])
def test_wgs84_and_cgcs2000_are_identity(name):
    assert crs.to_wgs84(120.1, 30.2, name) == (120.1, 30.2)
    assert crs.from_wgs84(120.1, 30.2, name) == (120.1, 30.2)


def test_point_crs_names_are_case_insensitive():
    assert crs.to_wgs84(*crs.wgs84_to_gcj02(120.1, 30.2), " GCJ02 ") == pytest.approx((120.1, 30.2), abs=1e-7)
    assert crs.from_wgs84(120.1, 30.2, "BD09") == crs.gcj02_to_bd09(*crs.wgs84_to_gcj02(120.1, 30.2))


@pytest.mark.parametrize("name", ["mercator", "bd09mc", "EPSG:3857", ""])
def test_unknown_point_crs_is_rejected(name):
    with pytest.raises(UnsupportedCRS) as excinfo:
        crs.to_wgs84(120.0, 30.0, name)
    assert excinfo.value.code == "geo.unsupported_crs"


@pytest.mark.parametrize(
    "convert",
    [
        lambda: crs.wgs84_to_gcj02(2.35, 48.85),
        lambda: crs.gcj02_to_wgs84(-74.0, 40.7),
        lambda: crs.gcj02_to_bd09(151.2, -33.9),
        lambda: crs.bd09_to_gcj02(0.0, 0.0),
        lambda: crs.to_wgs84(2.35, 48.85, "gcj02"),
        lambda: crs.from_wgs84(2.35, 48.85, "bd09"),
    ],
)
def test_outside_china_is_rejected(convert):
    with pytest.raises(OutsideChina) as excinfo:
        convert()
    assert excinfo.value.code == "geo.outside_china"


def test_wgs84_outside_china_passes_through():
    assert crs.to_wgs84(2.35, 48.85, "wgs84") == (2.35, 48.85)


def test_in_china():
    assert crs.in_china(116.4, 39.9)
    assert not crs.in_china(2.35, 48.85)
    assert not crs.in_china(116.4, 60.0)


@pytest.mark.parametrize(
    "value",
    ["EPSG:4490", "4490", 4490, " epsg:4490 ", pyproj.CRS.from_epsg(4490), pyproj.CRS.from_epsg(4490).to_wkt()],
)
def test_resolve_crs_accepts_common_spellings(value):
    assert crs.resolve_crs(value).to_epsg() == 4490


def test_resolve_crs_accepts_proj_string():
    assert crs.resolve_crs("+proj=tmerc +lon_0=120 +x_0=500000 +ellps=GRS80 +units=m +no_defs").is_projected


@pytest.mark.parametrize("value", ["EPSG:999999", "not a crs", "", "GEOGCS[broken"])
def test_resolve_crs_rejects_garbage(value):
    with pytest.raises(UnsupportedCRS) as excinfo:
        crs.resolve_crs(value)
    assert "CRS" in excinfo.value.message


def grs80_meridian_arc(lat_deg):
    """Return the GRS80 meridian arc length in metres from the equator, by Simpson integration."""
    a, f = 6378137.0, 1 / 298.257222101
    e2 = f * (2 - f)
    phi = np.linspace(0.0, math.radians(lat_deg), 20001)
    m = a * (1 - e2) / (1 - e2 * np.sin(phi) ** 2) ** 1.5
    h = phi[1] - phi[0]
    return h / 3 * (m[0] + m[-1] + 4 * m[1:-1:2].sum() + 2 * m[2:-1:2].sum())


@pytest.mark.parametrize("lat", [0.0, 23.5, 30.0, 41.0])
def test_gauss_kruger_central_meridian_maps_to_120e(lat):
    # EPSG:4549 is CGCS2000 / 3-degree Gauss-Kruger CM 120E: false easting 500 km, scale 1 on the
    # central meridian, so (500000, meridian arc) must be (120, lat). 1e-8 degrees is about 1 mm.
    point = crs.to_storage(shapely.Point(500000.0, grs80_meridian_arc(lat)), "EPSG:4549")
    assert point.x == pytest.approx(120.0, abs=1e-9)
    assert point.y == pytest.approx(lat, abs=1e-8)


def test_to_storage_keeps_z_and_handles_arrays():
    points = crs.to_storage(np.array([shapely.Point(500000, 0, 12.5), shapely.Point(500000, 0)]), 4549)
    assert points[0].has_z and points[0].z == 12.5
    assert not points[1].has_z


def test_to_storage_is_identity_for_wgs84_and_cgcs2000():
    box = shapely.box(120, 30, 120.01, 30.01)
    assert crs.to_storage(box, "EPSG:4326") is box
    assert crs.to_storage(box, 4490) is box


def test_local_metric_crs_gives_true_areas():
    box = shapely.box(120.0, 30.0, 120.001, 30.001)
    expected = abs(pyproj.Geod(ellps="WGS84").geometry_area_perimeter(box)[0])
    metric = crs.project_to_metres(box, crs.local_metric_crs(120.0005, 30.0005))
    assert metric.area == pytest.approx(expected, rel=1e-6)
    assert 9000 < metric.area < 11000
