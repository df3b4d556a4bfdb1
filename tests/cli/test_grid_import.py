"""`flask grid import`: every format, every topology fault, and history across re-imports."""
import json

import pytest
import shapely
import shapely.affinity
from pyproj import Transformer
from sqlalchemy import func, select

from geo.grid import square_cells
from gridapp.extensions import db
from gridapp.models import AdminArea, GridCell, GridImport
from gridapp.services.areas import ensure_area
from tests.factories import make_user
from tests.geodata import gbk_shapefile, write_geojson, write_kml, write_layer, zip_shapefile

TOWNSHIP = "330521101"
VILLAGE = TOWNSHIP + "001"
WEST, NORTH, SIZE = 120.0, 30.5, 0.001


def grid(cols=3, rows=3):
    """A clean cols × rows grid: (codes, names, polygons)."""
    cells = square_cells(WEST, NORTH, SIZE, SIZE, cols, rows, VILLAGE)
    return [c for c, _ in cells], [f"城北社区{c[-3:]}号网格" for c, _ in cells], [p for _, p in cells]


@pytest.fixture
def township(app):
    county = ensure_area("330521", "德清县", "county")
    area = ensure_area(TOWNSHIP, "乾元镇", "township", county)
    db.session.commit()
    return area


def run_import(runner, path, *extra):
    result = runner.invoke(args=["grid", "import", str(path), "--township", TOWNSHIP, "--json", *extra])
    # --json prints one JSON document first; a failure then adds click's "Error: ..." line.
    start = result.output.find("{")
    report = json.JSONDecoder().raw_decode(result.output[start:])[0] if start >= 0 else None
    return result, report


def stored(current_only=True):
    query = select(func.count()).select_from(GridCell)
    if current_only:
        query = query.where(GridCell.valid_to.is_(None))
    return db.session.scalar(query)


def assert_nothing_written():
    db.session.rollback()
    assert stored(current_only=False) == 0
    assert db.session.scalar(select(func.count()).select_from(GridImport)) == 0
    assert db.session.scalar(select(func.count()).select_from(AdminArea).where(AdminArea.level == "village")) == 0


def test_geojson(runner, township, tmp_path):
    codes, names, polygons = grid()
    result, report = run_import(runner, write_geojson(tmp_path / "g.geojson", polygons, {"code": codes, "name": names}))
    assert result.exit_code == 0, result.output
    assert report["summary"]["added"] == 9 and report["report"]["faults"] == []
    cells = db.session.scalars(select(GridCell).order_by(GridCell.code)).all()
    assert [c.code for c in cells] == codes and cells[0].name == names[0]
    assert all(9000 < c.area_m2 < 12000 for c in cells)
    assert cells[0].village.code == VILLAGE and cells[0].township.code == TOWNSHIP
    assert db.session.scalar(select(GridImport.driver)) == "GeoJSON"


def test_gbk_shapefile_without_cpg(runner, township, tmp_path):
    codes, names, polygons = grid()
    fields = {"WGBM": codes, "WGMC": names, "CMC": ["城北社区"] * len(codes)}
    archive = zip_shapefile(gbk_shapefile(tmp_path, 0x4D, polygons, fields))
    result, report = run_import(runner, archive)
    assert result.exit_code == 0, result.output
    assert db.session.scalar(select(GridCell.name).where(GridCell.code == codes[4])) == names[4]
    # The village did not exist: it was created, named from the file's village column.
    assert report["villages_created"] == [VILLAGE]
    assert db.session.scalar(select(AdminArea.name).where(AdminArea.code == VILLAGE)) == "城北社区"
    grid_import = db.session.scalar(select(GridImport))
    assert (grid_import.driver, grid_import.encoding, grid_import.source_crs) == ("ESRI Shapefile", "gbk", "EPSG:4490")


def test_geopackage_in_cgcs2000_gauss_kruger(runner, township, tmp_path):
    """A GIS office's file in a projected CGCS2000 zone arrives in lon/lat."""
    codes, names, polygons = grid(2, 2)
    to_gk = Transformer.from_crs(4326, 4549, always_xy=True)
    projected = [shapely.transform(p, to_gk.transform, interleaved=False) for p in polygons]
    path = write_layer(tmp_path / "g.gpkg", projected, {"code": codes, "name": names}, crs="EPSG:4549", layer="cells")
    result, _ = run_import(runner, path)
    assert result.exit_code == 0, result.output
    cell = db.session.scalar(select(GridCell).where(GridCell.code == codes[0]))
    lon, lat = db.session.execute(select(func.ST_X(func.ST_Centroid(GridCell.geom)),
                                         func.ST_Y(func.ST_Centroid(GridCell.geom))).where(GridCell.id == cell.id)).one()
    assert abs(lon - (WEST + SIZE / 2)) < 1e-6 and abs(lat - (NORTH - SIZE / 2)) < 1e-6


def test_kml_with_code_field_named(runner, township, tmp_path):
    codes, _, polygons = grid(2, 1)
    result, report = run_import(runner, write_kml(tmp_path / "g.kml", polygons, codes), "--code-field", "Name")
    assert result.exit_code == 0, result.output
    assert report["summary"]["added"] == 2


def test_no_crs_is_an_error_unless_given(runner, township, tmp_path):
    codes, names, polygons = grid(2, 1)
    shp = write_layer(tmp_path / "g.shp", polygons, {"code": codes, "name": names}, crs=None)
    result, report = run_import(runner, zip_shapefile(shp))
    assert result.exit_code != 0 and report["code"] == "geo.crs_required"
    assert_nothing_written()
    result, _ = run_import(runner, zip_shapefile(shp), "--crs", "EPSG:4490")
    assert result.exit_code == 0 and stored() == 2


def test_unreadable_file_and_missing_code_field(runner, township, tmp_path):
    junk = tmp_path / "cells.txt"
    junk.write_text("not a grid")
    result, report = run_import(runner, junk)
    assert result.exit_code != 0 and report["code"] == "geo.unreadable_file"
    codes, names, polygons = grid(2, 1)
    path = write_geojson(tmp_path / "g.geojson", polygons, {"id_x": codes})
    result, report = run_import(runner, path)
    assert result.exit_code != 0 and report["code"] == "grid.import_rejected"
    assert report["details"]["attributes"] == ["id_x"]
    assert_nothing_written()


def test_unknown_township(runner, township, tmp_path):
    codes, names, polygons = grid(1, 1)
    path = write_geojson(tmp_path / "g.geojson", polygons, {"code": codes})
    result = runner.invoke(args=["grid", "import", str(path), "--township", "330521199"])
    assert result.exit_code != 0 and "area.not_found" in result.output
    assert_nothing_written()


def _faulty(kind):
    codes, names, polygons = grid()
    if kind == "invalid_geometry":
        polygons[4] = shapely.Polygon([(WEST + SIZE, NORTH - SIZE), (WEST + 2 * SIZE, NORTH - 2 * SIZE),
                                       (WEST + 2 * SIZE, NORTH - SIZE), (WEST + SIZE, NORTH - 2 * SIZE)])
    elif kind == "overlap":
        polygons[0] = shapely.affinity.translate(polygons[0], SIZE * 0.3, 0)
    elif kind == "gap":
        del codes[4], names[4], polygons[4]
    elif kind == "sliver":
        codes.append(VILLAGE + "010")
        names.append("sliver")
        polygons.append(shapely.box(WEST + 3 * SIZE, NORTH - SIZE, WEST + 3 * SIZE + 1e-6, NORTH))
    elif kind == "duplicate_code":
        codes[1] = codes[0]
    elif kind == "outside_township":
        codes[8] = "330521102001009"
    elif kind == "bad_code":
        codes[8] = codes[8][:14]
    return codes, names, polygons


@pytest.mark.parametrize("kind,severity", [
    ("invalid_geometry", "error"), ("overlap", "error"), ("duplicate_code", "error"),
    ("outside_township", "error"), ("bad_code", "error"), ("gap", "warning"), ("sliver", "warning"),
])
def test_each_topology_fault_blocks_and_writes_nothing(runner, township, tmp_path, kind, severity):
    codes, names, polygons = _faulty(kind)
    path = write_geojson(tmp_path / "g.geojson", polygons, {"code": codes, "name": names})
    result, report = run_import(runner, path)
    assert result.exit_code != 0
    assert report["code"] == "grid.import_rejected"
    faults = report["details"]["report"]["faults"]
    assert kind in {f["kind"] for f in faults}
    assert {f["severity"] for f in faults if f["kind"] == kind} == {severity}
    assert_nothing_written()


def test_repair_and_allow_warnings_are_explicit(runner, township, tmp_path):
    codes, names, polygons = _faulty("invalid_geometry")
    path = write_geojson(tmp_path / "bad.geojson", polygons, {"code": codes, "name": names})
    result, report = run_import(runner, path, "--repair", "--allow-warnings")
    assert result.exit_code == 0, result.output
    assert report["summary"]["repairs"] == [f"{codes[4]}: repaired"]
    assert db.session.scalar(select(func.count()).select_from(GridCell).where(func.ST_IsValid(GridCell.geom))) == 9

    codes, names, polygons = _faulty("gap")
    path = write_geojson(tmp_path / "gap.geojson", polygons, {"code": codes, "name": names})
    result, report = run_import(runner, path, "--allow-warnings")
    assert result.exit_code == 0, result.output
    assert [f["kind"] for f in report["report"]["faults"]] == ["gap"]


def test_dry_run_reports_and_writes_nothing(runner, township, tmp_path):
    codes, names, polygons = grid()
    result, report = run_import(runner, write_geojson(tmp_path / "g.geojson", polygons, {"code": codes}), "--dry-run")
    assert result.exit_code == 0 and report["dry_run"] and report["summary"]["added"] == 9
    assert_nothing_written()


def test_reimport_keeps_history_and_workers(runner, township, tmp_path):
    codes, names, polygons = grid()
    path = write_geojson(tmp_path / "v1.geojson", polygons, {"code": codes, "name": names})
    assert run_import(runner, path)[0].exit_code == 0
    # The same file again changes nothing.
    result, report = run_import(runner, path)
    assert report["summary"] == {"features": 9, "added": 0, "changed": 0, "retired": 0, "unchanged": 9, "repairs": []}
    assert stored(current_only=False) == 9

    first = db.session.scalar(select(GridCell).where(GridCell.code == codes[0]))
    worker = make_user("worker", "grid_worker", township, cells=[first])
    db.session.commit()
    # v2: cell 0 redrawn (together with cell 1, so the grid stays seamless), cell 8 dropped.
    polygons[0] = shapely.box(WEST, NORTH - SIZE, WEST + SIZE * 1.5, NORTH)
    polygons[1] = shapely.box(WEST + SIZE * 1.5, NORTH - SIZE, WEST + 2 * SIZE, NORTH)
    path = write_geojson(tmp_path / "v2.geojson", polygons[:8], {"code": codes[:8], "name": names[:8]})
    result, report = run_import(runner, path, "--allow-warnings")
    assert result.exit_code == 0, result.output
    assert report["summary"]["changed"] == 2 and report["summary"]["retired"] == 1
    db.session.expire_all()
    versions = db.session.scalars(select(GridCell).where(GridCell.code == codes[0]).order_by(GridCell.id)).all()
    assert len(versions) == 2 and versions[0].valid_to is not None and versions[1].valid_to is None
    assert [u.username for u in versions[1].workers] == ["worker"]
    assert [c.code for c in db.session.get(type(worker), worker.id).cells if c.valid_to is None] == [codes[0]]
    assert stored() == 8 and stored(current_only=False) == 11


def test_unknown_crs_is_refused(runner, township, tmp_path):
    codes, names, polygons = grid(1, 1)
    path = write_geojson(tmp_path / "g.geojson", polygons, {"code": codes})
    result, report = run_import(runner, path, "--crs", "EPSG:999999")
    assert result.exit_code != 0 and report["code"] == "geo.unsupported_crs"
    assert_nothing_written()
