import json
from dataclasses import replace

import pyproj
import pytest
import shapely
from shapely.geometry import LineString, Polygon

from geo.grid import square_cells
from geo.topology import CellInput, Thresholds, check_cells

TOWNSHIP = "330106001"
VILLAGE = TOWNSHIP + "001"
WEST, NORTH = 120.0, 30.0
WIDTH = HEIGHT = 0.001  # about 96 m x 111 m at 30 N
COLS, ROWS = 4, 3
GEOD = pyproj.Geod(ellps="WGS84")


def grid(cols=COLS, rows=ROWS):
    """Build a clean cols x rows grid of CellInput, numbered as square_cells numbers them."""
    return [CellInput(code, None, poly) for code, poly in square_cells(WEST, NORTH, WIDTH, HEIGHT, cols, rows, VILLAGE)]


def geodesic_area(geom):
    return abs(GEOD.geometry_area_perimeter(geom)[0])


def kinds(report):
    return sorted(f.kind for f in report.faults)


def test_clean_grid_has_no_faults():
    report = check_cells(grid(), TOWNSHIP)
    assert report.faults == []
    assert report.ok
    assert json.loads(json.dumps(report.as_dict())) == {"ok": True, "error_count": 0, "warning_count": 0, "faults": []}


def test_bow_tie_is_invalid_geometry():
    cells = grid()
    west, south, east, north = cells[0].geom.bounds
    cells[0] = replace(cells[0], geom=Polygon([(west, south), (east, north), (east, south), (west, north)]))
    report = check_cells(cells, TOWNSHIP)
    assert kinds(report) == ["invalid_geometry"]
    fault = report.errors[0]
    assert fault.codes == (cells[0].code,)
    assert "Self-intersection" in fault.details["reason"]
    assert not report.ok


@pytest.mark.parametrize(("geom", "reason"), [(None, "empty"), (LineString([(120, 30), (120.001, 30)]), "LineString")])
def test_missing_or_wrong_type_geometry_is_invalid(geom, reason):
    cells = grid()
    cells[0] = replace(cells[0], geom=geom)
    report = check_cells(cells, TOWNSHIP)
    assert kinds(report) == ["invalid_geometry"]
    assert reason in report.faults[0].details["reason"]


def test_duplicated_code():
    cells = grid()
    cells[1] = replace(cells[1], code=cells[0].code)
    report = check_cells(cells, TOWNSHIP)
    assert kinds(report) == ["duplicate_code"]
    assert report.errors[0].codes == (cells[0].code,)
    assert report.errors[0].details == {"count": 2}


def test_fourteen_digit_code():
    cells = grid()
    cells[2] = replace(cells[2], code=cells[2].code[:-1])
    report = check_cells(cells, TOWNSHIP)
    assert kinds(report) == ["bad_code"]
    assert report.errors[0].codes == (cells[2].code,)


def test_code_from_another_township():
    cells = grid()
    cells[3] = replace(cells[3], code="330106002001004")
    report = check_cells(cells, TOWNSHIP)
    assert kinds(report) == ["outside_township"]
    assert report.errors[0].codes == ("330106002001004",)


def test_overlapping_cells():
    cells = grid()
    west, south, east, north = cells[0].geom.bounds
    # Stretch cell 001 a fifth of a cell into cell 002, its east neighbour.
    cells[0] = replace(cells[0], geom=shapely.box(west, south, east + WIDTH / 5, north))
    report = check_cells(cells, TOWNSHIP)
    assert kinds(report) == ["overlap"]
    fault = report.errors[0]
    assert fault.codes == (cells[0].code, cells[1].code)
    overlap = shapely.box(east, south, east + WIDTH / 5, north)
    assert fault.details["area_m2"] == pytest.approx(geodesic_area(overlap), rel=1e-3)


def test_overlap_below_threshold_is_ignored():
    cells = grid()
    west, south, east, north = cells[0].geom.bounds
    cells[0] = replace(cells[0], geom=shapely.box(west, south, east + WIDTH / 5, north))
    assert check_cells(cells, TOWNSHIP, thresholds=Thresholds(overlap_m2=5000.0)).faults == []


def test_missing_cell_in_the_middle_is_a_gap():
    cells = grid()
    removed = cells.pop(5)  # row 2, column 2: surrounded on all sides
    report = check_cells(cells, TOWNSHIP)
    assert kinds(report) == ["gap"]
    assert report.ok  # gaps are warnings
    fault = report.warnings[0]
    assert fault.details["area_m2"] == pytest.approx(geodesic_area(removed.geom), rel=1e-3)
    assert removed.geom.contains(shapely.Point(fault.details["lon"], fault.details["lat"]))
    assert len(fault.codes) == 8 and removed.code not in fault.codes


def test_tiny_and_thin_cells_are_slivers():
    cells = grid()
    west, south, east, north = shapely.total_bounds([c.geom for c in cells])
    metre = WIDTH / 96.0
    cells.append(CellInput(VILLAGE + "013", "tiny", shapely.box(east, north - 5 * metre, east + 5 * metre, north)))
    cells.append(CellInput(VILLAGE + "014", "thin", shapely.box(west - metre, south, west, north)))
    report = check_cells(cells, TOWNSHIP)
    assert kinds(report) == ["sliver", "sliver"]
    tiny, thin = report.warnings
    assert tiny.codes == (VILLAGE + "013",) and tiny.details["area_m2"] < 50
    assert thin.codes == (VILLAGE + "014",) and thin.details["area_m2"] > 50 and thin.details["thinness"] < 0.05


def test_boundary_matching_the_grid_is_clean():
    cells = grid()
    boundary = shapely.union_all([c.geom for c in cells])
    assert check_cells(cells, TOWNSHIP, boundary=boundary).faults == []


def test_boundary_larger_than_the_grid_leaves_a_gap():
    cells = grid()
    west, south, east, north = shapely.total_bounds([c.geom for c in cells])
    report = check_cells(cells, TOWNSHIP, boundary=shapely.box(west, south, east + WIDTH, north))
    assert kinds(report) == ["gap"]
    assert report.warnings[0].details["area_m2"] == pytest.approx(
        geodesic_area(shapely.box(east, south, east + WIDTH, north)), rel=1e-3
    )


def test_cell_outside_the_boundary():
    cells = grid()
    west, south, east, north = shapely.total_bounds([c.geom for c in cells])
    report = check_cells(cells, TOWNSHIP, boundary=shapely.box(west, south, east - WIDTH / 2, north))
    assert kinds(report) == ["outside_township"] * ROWS
    assert {f.codes[0] for f in report.errors} == {c.code for c in cells[COLS - 1 :: COLS]}


def test_bad_township_code_is_rejected():
    with pytest.raises(ValueError):
        check_cells(grid(), "330106")


def test_ten_thousand_cells():
    cells = []
    # 16 villages of 25 x 25 cells in a 4 x 4 block: 10,000 cells in one township.
    for n in range(16):
        west, north = WEST + (n % 4) * 25 * WIDTH, NORTH - (n // 4) * 25 * HEIGHT
        village = f"{TOWNSHIP}{n + 1:03d}"
        cells += [CellInput(c, None, p) for c, p in square_cells(west, north, WIDTH, HEIGHT, 25, 25, village)]
    assert len(cells) == 10_000
    assert check_cells(cells, TOWNSHIP).faults == []


def test_report_with_faults_is_json_ready():
    cells = grid()
    cells.pop(5)
    cells[0] = replace(cells[0], code="33010600100100")
    report = check_cells(cells, TOWNSHIP).as_dict()
    assert json.loads(json.dumps(report)) == report
    assert report["ok"] is False
    assert (report["error_count"], report["warning_count"]) == (1, 1)
    assert {f["kind"]: f["severity"] for f in report["faults"]} == {"bad_code": "error", "gap": "warning"}
