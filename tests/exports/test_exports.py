"""Every export format, opened by clients we did not write (GDAL's ogrinfo, pyogrio), with masking."""
import json
import zipfile

import pyogrio.raw
import pytest
import shapely
from shapely.geometry import shape

from gridapp.extensions import db
from tests.exports.helpers import FORMULA, PARTY, feature_count, ogrinfo

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning:pyogrio")

INCIDENT_FIELDS = ("case_number", "status", "category_code", "category_name", "description", "township_code",
                   "cell_code", "received_at", "party_name", "party_phone", "party_id_number")
MASKED = {"party_name": "张**", "party_phone": "138****5678", "party_id_number": "330521********1234"}


def download(client, data, url, tmp_path, name, user="dispatcher"):
    response = client.get(url, headers=data["headers"][user])
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    path = tmp_path / name
    path.write_bytes(response.get_data())
    return path, response


def assert_no_raw_personal_data(raw: bytes):
    for value in PARTY.values():
        assert value.encode() not in raw


@pytest.mark.parametrize("fmt,name,source", [
    ("geojson", "x.geojson", "{path}"),
    ("gpkg", "x.gpkg", "{path}"),
    ("shp", "x.zip", "/vsizip/{path}"),
    ("kml", "x.kml", "{path}"),
])
def test_vector_formats_open_in_gdal_with_count_fields_and_crs(client, data, tmp_path, fmt, name, source):
    path, _ = download(client, data, f"/api/v1/exports/incidents.{fmt}", tmp_path, name)
    summary = ogrinfo("-al", "-so", source.format(path=path))
    assert feature_count(summary) == 6  # township A only: the dispatcher's scope
    assert "WGS 84" in summary or "WGS_1984" in summary
    if fmt != "kml":  # KML keeps its attributes in ExtendedData, read as fields too
        for field in INCIDENT_FIELDS:
            shown = field if fmt != "shp" else field[:10]
            assert f"\n{shown}: " in summary, (field, summary)
    full = ogrinfo("-al", source.format(path=path))
    assert MASKED["party_phone"] in full and MASKED["party_id_number"] in full and MASKED["party_name"] in full
    assert_no_raw_personal_data(full.encode())
    assert "占道经营，当事人拒不整改" in full  # Chinese text survives every format


def test_geopackage_in_cgcs2000_on_request(client, data, tmp_path):
    path, _ = download(client, data, "/api/v1/exports/incidents.gpkg?srs=4490", tmp_path, "x.gpkg")
    summary = ogrinfo("-al", "-so", str(path))
    assert "China Geodetic Coordinate System 2000" in summary or "CGCS2000" in summary or "China_2000" in summary
    assert feature_count(summary) == 6


def test_geojson_is_rfc7946(client, data, tmp_path):
    path, response = download(client, data, "/api/v1/exports/cells.geojson", tmp_path, "cells.geojson")
    assert response.mimetype == "application/geo+json"
    document = json.loads(path.read_text(encoding="utf-8"))
    assert "crs" not in document
    assert len(document["features"]) == 6
    for feature in document["features"]:
        polygon = shape(feature["geometry"])
        exterior = polygon.geoms[0].exterior if hasattr(polygon, "geoms") else polygon.exterior
        assert exterior.is_ccw  # right-hand rule: exterior rings counter-clockwise
        lon, lat = exterior.coords[0]
        assert 119 < lon < 121 and 30 < lat < 31  # lon first
    incidents = client.get("/api/v1/exports/incidents.geojson", headers=data["headers"]["dispatcher"]).get_json()
    lon, lat = incidents["features"][0]["geometry"]["coordinates"]
    assert 119 < lon < 121 and 30 < lat < 31


def test_shapefile_zip_has_short_names_mapping_cpg_and_prj(client, data, tmp_path):
    path, _ = download(client, data, "/api/v1/exports/incidents.shp", tmp_path, "x.zip")
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        assert {"incidents.shp", "incidents.shx", "incidents.dbf", "incidents.prj", "incidents.cpg",
                "fields.csv"} <= names
        assert archive.read("incidents.cpg").decode() == "UTF-8"
        mapping = archive.read("fields.csv").decode("utf-8-sig").splitlines()
    assert "party_id_n,party_id_number" in mapping and "category_c,category_code" in mapping
    assert mapping[0] == "shapefile_field,field"
    assert all(len(line.split(",")[0].encode()) <= 10 for line in mapping[1:])
    cells = tmp_path / "cells.zip"
    cells.write_bytes(client.get("/api/v1/exports/cells.shp", headers=data["headers"]["dispatcher"]).get_data())
    summary = ogrinfo("-al", "-so", f"/vsizip/{cells}")
    assert feature_count(summary) == 6 and "Polygon" in summary


def test_cells_export_in_every_vector_format(client, data, tmp_path):
    for fmt, name, prefix in (("gpkg", "c.gpkg", ""), ("kml", "c.kml", ""), ("geojson", "c.geojson", "")):
        path, _ = download(client, data, f"/api/v1/exports/cells.{fmt}", tmp_path, name)
        summary = ogrinfo("-al", "-so", prefix + str(path))
        assert feature_count(summary) == 6, summary
        assert "Polygon" in summary or "POLYGON" in ogrinfo("-al", "-q", "-fid", "1", str(path)), summary


def test_csv_has_bom_escapes_formulas_and_keeps_id_numbers(client, data, tmp_path):
    path, response = download(client, data, "/api/v1/exports/incidents.csv?unmasked=true&reason=court+order",
                              tmp_path, "x.csv", user="supervisor")
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    _, _, _, columns = pyogrio.raw.read(str(path))[:4]
    meta, _, _, values = pyogrio.raw.read(str(path))
    table = dict(zip(meta["fields"], values))
    assert PARTY["id_number"] in list(table["party_id_number"])  # intact: 18 digits, as text
    assert "'" + FORMULA in list(table["description"])  # neutralised for Excel
    assert FORMULA not in [v for v in table["description"] if not v.startswith("'")]


def test_xlsx_types_id_and_phone_as_text(client, data, tmp_path):
    path, _ = download(client, data, "/api/v1/exports/incidents.xlsx?unmasked=true&reason=court+order",
                       tmp_path, "x.xlsx", user="supervisor")
    meta, _, _, values = pyogrio.raw.read(str(path))  # GDAL's XLSX driver, not openpyxl
    table = dict(zip(meta["fields"], values))
    types = dict(zip(meta["fields"], meta["dtypes"]))
    assert types["party_id_number"] == "object" and types["party_phone"] == "object"
    assert PARTY["id_number"] in list(table["party_id_number"])
    assert PARTY["phone"] in list(table["party_phone"])
    assert len(table["case_number"]) == 6


def test_masked_by_default_in_csv_and_xlsx(client, data, tmp_path):
    for fmt in ("csv", "xlsx"):
        path, _ = download(client, data, f"/api/v1/exports/incidents.{fmt}", tmp_path, f"m.{fmt}")
        meta, _, _, values = pyogrio.raw.read(str(path))
        table = dict(zip(meta["fields"], values))
        for field, masked in MASKED.items():
            assert masked in list(table[field]), (fmt, field)
        if fmt == "csv":
            assert_no_raw_personal_data(path.read_bytes())


def test_filters_select_rows(client, data):
    def count(query):
        response = client.get(f"/api/v1/exports/incidents.geojson?{query}", headers=data["headers"]["dispatcher"])
        assert response.status_code == 200, response.get_json()
        return len(response.get_json()["features"])

    cell0 = data["cells_a"][0].code
    assert count("") == 6
    assert count(f"cell={cell0}") == 2
    assert count("category=09006") == 1
    assert count("category=06") == 4
    assert count("status=reported,closed") == 6
    assert count("status=closed") == 0
    assert count("area=330521102") == 0  # the other township: outside the dispatcher's scope
    assert count("start=2000-01-01T00:00:00Z&end=2001-01-01T00:00:00Z") == 0
    assert count(f"squad={data['squad_a'].id}") == 0
    county = client.get("/api/v1/exports/incidents.geojson?area=330521102",
                        headers=data["headers"]["county_supervisor"]).get_json()
    assert [f["properties"]["description"] for f in county["features"]] == ["乙镇的事件"]


def test_bad_filters_and_roles_are_refused(client, data):
    headers = data["headers"]["dispatcher"]
    response = client.get("/api/v1/exports/incidents.csv?area=33", headers=headers)
    assert response.status_code == 422 and response.get_json()["code"] == "validation_error"
    response = client.get("/api/v1/exports/incidents.csv?start=2026-02-01T00:00:00Z&end=2026-01-01T00:00:00Z",
                          headers=headers)
    assert response.status_code == 422 and "end" in response.get_json()["details"]["fields"]
    assert client.get("/api/v1/exports/incidents.dwg", headers=headers).status_code == 404
    response = client.get("/api/v1/exports/incidents.csv", headers=data["headers"]["reporter"])
    assert response.status_code == 403 and response.get_json()["code"] == "auth.forbidden"


def test_large_direct_export_is_refused_with_a_hint(app, client, data):
    app.config["EXPORT_MAX_DIRECT_ROWS"] = 3
    try:
        response = client.get("/api/v1/exports/incidents.geojson", headers=data["headers"]["dispatcher"])
    finally:
        app.config["EXPORT_MAX_DIRECT_ROWS"] = 50_000
    assert response.status_code == 422
    body = response.get_json()
    assert body["code"] == "export.too_large" and body["details"]["rows"] == 6 and body["details"]["limit"] == 3


def test_polygon_rings_survive_the_shapefile(client, data, tmp_path):
    path, _ = download(client, data, "/api/v1/exports/cells.shp", tmp_path, "c.zip")
    meta, _, geometry, _ = pyogrio.raw.read(f"/vsizip/{path}")
    polygons = shapely.from_wkb(geometry)
    expected = {c.code: c for c in data["cells_a"]}
    assert len(polygons) == len(expected)
    assert all(abs(p.area - 1e-6) < 1e-9 for p in polygons)  # 0.001° squares
    db.session.rollback()


def test_geojson_keeps_backslashes_quotes_and_control_characters(client, data):
    from tests.exports.helpers import new_incident

    tricky = 'C:\\temp\\"引号"\t制表\n换行 \\n'
    new_incident(data, cell=5, description=tricky, party={"name": 'O\'Brien \\ "张"', "phone": None,
                                                           "id_number": None})
    db.session.commit()
    from gridapp.services.masking import mask_name

    for query, name in (("", mask_name('O\'Brien \\ "张"')), ("?unmasked=true&reason=check", 'O\'Brien \\ "张"')):
        response = client.get(f"/api/v1/exports/incidents.geojson{query}", headers=data["headers"]["supervisor"])
        features = json.loads(response.get_data())["features"]
        match = [f["properties"] for f in features if f["properties"]["description"] == tricky]
        assert len(match) == 1 and match[0]["party_name"] == name, [f["properties"]["description"] for f in features]
