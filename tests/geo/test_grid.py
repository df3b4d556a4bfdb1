import pytest
import shapely

from geo.grid import AREA_CODE_LENGTHS, area_level_for_code, is_cell_code, split_cell_code, square_cells

VILLAGE = "330106001001"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("330106001001001", True),
        ("33010600100100", False),
        ("3301060010010011", False),
        ("33010600100100a", False),
        ("３３０１０６００１００１００１", False),  # full-width digits pass str.isdigit()
        (330106001001001, False),
        (None, False),
    ],
)
def test_is_cell_code(value, expected):
    assert is_cell_code(value) is expected


def test_split_cell_code():
    assert split_cell_code("330106001002003") == ("330106", "330106001", "330106001002", "003")


def test_split_rejects_bad_code():
    with pytest.raises(ValueError):
        split_cell_code("33010600100200")


@pytest.mark.parametrize(
    ("code", "level"), [("330106", "county"), ("330106001", "township"), ("330106001002", "village")]
)
def test_area_level_for_code(code, level):
    assert area_level_for_code(code) == level
    assert len(code) == AREA_CODE_LENGTHS[level]


@pytest.mark.parametrize("code", ["33010", "330106001002003", "33010a", "", None])
def test_area_level_rejects_bad_codes(code):
    with pytest.raises(ValueError):
        area_level_for_code(code)


def test_square_cells_are_numbered_west_to_east_then_north_to_south():
    cells = square_cells(120.0, 30.0, 0.001, 0.002, cols=3, rows=2, village_code=VILLAGE)
    assert [code for code, _ in cells] == [f"{VILLAGE}{n:03d}" for n in range(1, 7)]
    first, third, fourth = cells[0][1], cells[2][1], cells[3][1]
    assert first.equals_exact(shapely.box(120.0, 29.998, 120.001, 30.0), 1e-12)
    assert third.bounds[0] > first.bounds[0] and third.bounds[1] == first.bounds[1]
    assert fourth.bounds[0] == first.bounds[0] and fourth.bounds[3] == first.bounds[1]
    assert all(poly.exterior.is_ccw for _, poly in cells)


def test_square_cells_share_identical_edges():
    cells = [poly for _, poly in square_cells(120.3, 30.7, 0.0011, 0.0013, cols=20, rows=20, village_code=VILLAGE)]
    # Exact vertex sharing makes the union a single hole-free rectangle with exactly the summed area.
    union = shapely.union_all(cells)
    assert union.geom_type == "Polygon" and not union.interiors
    assert union.area == pytest.approx(sum(c.area for c in cells), rel=1e-12)
    assert shapely.coverage_is_valid(cells)
    east_edge_of_first = {tuple(xy) for xy in shapely.get_coordinates(cells[0]) if xy[0] == cells[0].bounds[2]}
    west_edge_of_second = {tuple(xy) for xy in shapely.get_coordinates(cells[1]) if xy[0] == cells[1].bounds[0]}
    assert len(east_edge_of_first) == 2 and east_edge_of_first == west_edge_of_second


@pytest.mark.parametrize(
    "kwargs",
    [
        {"village_code": "33010600100"},
        {"cols": 0},
        {"cell_width_deg": -0.001},
        {"cols": 40, "rows": 25},
    ],
)
def test_square_cells_rejects_bad_input(kwargs):
    args = {"west": 120, "north": 30, "cell_width_deg": 0.001, "cell_height_deg": 0.001, "cols": 2, "rows": 2,
            "village_code": VILLAGE, **kwargs}
    with pytest.raises(ValueError):
        square_cells(**args)
