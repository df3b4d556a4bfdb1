import json
import zipfile

import numpy as np
import pyproj
import pytest
import shapely
from pyogrio import raw

from geo.errors import CRSRequired, UnreadableFile
from geo.io import detect_dbf_encoding, layers, read_features
from tests import geodata
from tests.geodata import set_ldid, zip_shapefile

CELLS = [shapely.box(120.0, 30.0, 120.001, 30.001), shapely.box(120.001, 30.0, 120.002, 30.001)]
CODES = ["330106001001001", "330106001001002"]
NAMES = ["东风村第一网格", "东风村第二网格"]


def write_layer(path, geoms=CELLS, fields=None, crs="EPSG:4490", **kwargs):
    return geodata.write_layer(path, geoms, fields if fields is not None else {"CODE": CODES, "NAME": NAMES}, crs, **kwargs)


def gbk_shapefile(tmp_path, ldid):
    return geodata.gbk_shapefile(tmp_path, ldid, CELLS, {"CODE": CODES, "NAME": NAMES})


def same_geometries(features, expected=CELLS, tol=1e-9):
    pairs = zip(features, expected, strict=True)
    return all(shapely.normalize(f.geom).equals_exact(shapely.normalize(e), tol) for f, e in pairs)


def test_geojson(tmp_path):
    path = tmp_path / "cells.geojson"
    collection = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {"code": c, "name": n}, "geometry": shapely.geometry.mapping(g)}
            for c, n, g in zip(CODES, NAMES, CELLS)
        ],
    }
    path.write_text(json.dumps(collection, ensure_ascii=False), encoding="utf-8")
    source = read_features(path)
    assert source.driver == "GeoJSON"
    assert source.source_crs == "EPSG:4326"
    assert source.encoding is None
    assert [f.properties for f in source.features] == [{"code": c, "name": n} for c, n in zip(CODES, NAMES)]
    assert same_geometries(source.features)


def test_geojson_with_legacy_crs_member(tmp_path):
    path = tmp_path / "cells.json"
    collection = {
        "type": "FeatureCollection",
        "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::4490"}},
        "features": [
            {"type": "Feature", "properties": {"code": CODES[0]}, "geometry": shapely.geometry.mapping(CELLS[0])}
        ],
    }
    path.write_text(json.dumps(collection), encoding="utf-8")
    source = read_features(path)
    assert source.source_crs == "EPSG:4490"
    assert same_geometries(source.features, CELLS[:1])


def test_zipped_utf8_shapefile_with_cpg_in_a_folder(tmp_path):
    shp = write_layer(tmp_path / "cells.shp", encoding="UTF-8")
    assert shp.with_suffix(".cpg").read_text().strip().upper() in ("UTF-8", "UTF8")
    archive = zip_shapefile(shp, folder="县/网格/")
    assert layers(archive) == ["cells"]
    source = read_features(archive)
    assert source.driver == "ESRI Shapefile"
    assert (source.encoding, source.encoding_source) == ("utf-8", "cpg")
    assert source.source_crs == "EPSG:4490"
    assert [f.properties["NAME"] for f in source.features] == NAMES
    assert same_geometries(source.features)


def test_zipped_gbk_shapefile_declared_by_ldid(tmp_path):
    source = read_features(zip_shapefile(gbk_shapefile(tmp_path, ldid=0x4D)))
    assert (source.encoding, source.encoding_source) == ("gbk", "ldid")
    assert [f.properties["NAME"] for f in source.features] == NAMES
    assert source.warnings == []


def test_zipped_gbk_shapefile_without_any_declaration(tmp_path):
    source = read_features(zip_shapefile(gbk_shapefile(tmp_path, ldid=0)))
    assert (source.encoding, source.encoding_source) == ("gb18030", "gb18030")
    assert [f.properties["NAME"] for f in source.features] == NAMES


def test_undeclared_utf8_shapefile(tmp_path):
    shp = write_layer(tmp_path / "cells.shp", encoding="UTF-8")
    shp.with_suffix(".cpg").unlink()
    set_ldid(shp.with_suffix(".dbf"), 0x57)
    source = read_features(shp)
    assert (source.encoding, source.encoding_source) == ("utf-8", "utf-8")
    assert [f.properties["NAME"] for f in source.features] == NAMES


def test_chinese_field_names_are_decoded(tmp_path):
    shp = write_layer(tmp_path / "cells.shp", fields={"网格编码": CODES, "网格名称": NAMES}, encoding="GBK")
    shp.with_suffix(".cpg").unlink()
    source = read_features(shp)
    assert source.encoding_source == "gb18030"
    assert source.features[1].properties == {"网格编码": CODES[1], "网格名称": NAMES[1]}


def test_shapefile_without_prj_needs_a_crs(tmp_path):
    shp = write_layer(tmp_path / "cells.shp", crs=None)
    assert not shp.with_suffix(".prj").exists()
    with pytest.raises(CRSRequired) as excinfo:
        read_features(shp)
    assert excinfo.value.code == "geo.crs_required"
    source = read_features(shp, crs="EPSG:4490")
    assert source.source_crs == "EPSG:4490"
    assert same_geometries(source.features)


def test_given_crs_overrides_the_file(tmp_path):
    centre = shapely.box(499950, 3319950, 500050, 3320050)
    shp = write_layer(tmp_path / "cells.shp", geoms=[centre], fields={"CODE": CODES[:1]}, crs="EPSG:4490")
    source = read_features(shp, crs="EPSG:4549")
    assert source.source_crs == "EPSG:4549"
    assert source.features[0].geom.centroid.x == pytest.approx(120.0, abs=1e-9)


def test_gauss_kruger_shapefile_comes_out_in_lon_lat(tmp_path):
    # 3320113.398 m is the GRS80 meridian arc to 30 N (test_crs derives it), so this 100 m square
    # on EPSG:4549's central meridian must be centred on (120 E, 30 N).
    northing = 3320113.398
    square = shapely.box(499950, northing - 50, 500050, northing + 50)
    shp = write_layer(tmp_path / "gk.shp", geoms=[square], fields={"CODE": CODES[:1]}, crs="EPSG:4549")
    source = read_features(zip_shapefile(shp))
    assert source.source_crs == "EPSG:4549"
    geom = source.features[0].geom
    assert geom.centroid.x == pytest.approx(120.0, abs=1e-9)
    assert geom.centroid.y == pytest.approx(30.0, abs=1e-7)
    # Gauss-Kruger has scale 1 on the central meridian, so the true area is 100 m x 100 m.
    assert abs(pyproj.Geod(ellps="GRS80").geometry_area_perimeter(geom)[0]) == pytest.approx(10_000, rel=1e-4)


def test_geopackage(tmp_path):
    source = read_features(write_layer(tmp_path / "cells.gpkg", layer="cells"))
    assert source.driver == "GPKG"
    assert source.layer == "cells"
    assert source.source_crs == "EPSG:4490"
    assert [f.properties["CODE"] for f in source.features] == CODES
    assert same_geometries(source.features)


def test_geopackage_with_undefined_srs_needs_a_crs(tmp_path):
    path = write_layer(tmp_path / "cells.gpkg", crs=None)
    with pytest.raises(CRSRequired):
        read_features(path)
    assert read_features(path, crs="4490").source_crs == "EPSG:4490"


def test_geopackage_with_several_layers(tmp_path):
    path = write_layer(tmp_path / "two.gpkg", layer="cells")
    write_layer(path, geoms=CELLS[:1], fields={"CODE": CODES[:1]}, layer="boundary")
    assert sorted(layers(path)) == ["boundary", "cells"]
    with pytest.raises(UnreadableFile) as excinfo:
        read_features(path)
    assert sorted(excinfo.value.details["layers"]) == ["boundary", "cells"]
    assert len(read_features(path, layer="boundary").features) == 1
    with pytest.raises(UnreadableFile):
        read_features(path, layer="nope")


KML = """<?xml version="1.0" encoding="UTF-8"?>
<kml xmlns="http://www.opengis.net/kml/2.2">
  <Document>
    <Placemark>
      <name>东风村第一网格</name>
      <ExtendedData>
        <Data name="code"><value>330106001001001</value></Data>
      </ExtendedData>
      <Polygon>
        <outerBoundaryIs><LinearRing>
          <coordinates>120,30,0 120.001,30,0 120.001,30.001,0 120,30.001,0 120,30,0</coordinates>
        </LinearRing></outerBoundaryIs>
      </Polygon>
    </Placemark>
  </Document>
</kml>
"""


def test_kml(tmp_path):
    path = tmp_path / "cells.kml"
    path.write_text(KML, encoding="utf-8")
    source = read_features(path)
    assert source.driver == "KML"
    assert source.source_crs == "EPSG:4326"
    [cell] = source.features
    assert cell.properties["Name"] == NAMES[0]
    assert cell.properties["code"] == CODES[0]
    assert "tessellate" not in cell.properties
    assert cell.geom.has_z  # kept as read; geo.validate drops it
    assert same_geometries([cell], [CELLS[0]])


def test_zip_with_path_traversal_is_rejected(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("cells.shp", b"")
        zf.writestr("../evil", b"owned")
    with pytest.raises(UnreadableFile) as excinfo:
        read_features(archive)
    assert excinfo.value.code == "geo.unreadable_file"
    assert not (tmp_path.parent / "evil").exists()


@pytest.mark.parametrize(
    "members",
    [
        {"/etc/cells.shp": b""},
        {"readme.txt": b"no shapefile here"},
        {"a.shp": b"", "b/b.shp": b""},
    ],
)
def test_unsuitable_zips_are_rejected(tmp_path, members):
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(UnreadableFile):
        read_features(archive)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("cells.csv", b"code,wkt\n"),
        ("cells", b"{}"),
        ("cells.gpkg", b"SQLite format 3\x00" + b"\x00" * 200),
        ("cells.zip", b"PK\x03\x04 truncated"),
        ("cells.geojson", b"{not json"),
    ],
)
def test_unreadable_files_are_rejected(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UnreadableFile):
        read_features(path)


def test_missing_file_is_unreadable(tmp_path):
    with pytest.raises(UnreadableFile):
        read_features(tmp_path / "absent.gpkg")


@pytest.mark.parametrize(
    ("cpg", "encoding"),
    [
        ("GBK", "gbk"),
        ("936", "gbk"),
        ("CP936", "gbk"),
        ("GB2312", "gbk"),
        ("UTF-8", "utf-8"),
        ("UTF8", "utf-8"),
        ("65001", "utf-8"),
        ("88591", "iso8859-1"),
        ("\ufeffgbk\r\n", "gbk"),
    ],
)
def test_cpg_text_is_normalised(tmp_path, cpg, encoding):
    shp = write_layer(tmp_path / "cells.shp", encoding="UTF-8")
    assert detect_dbf_encoding(shp.with_suffix(".dbf"), cpg) == (encoding, "cpg")


def test_unknown_cpg_falls_back_to_the_dbf(tmp_path):
    dbf = gbk_shapefile(tmp_path, ldid=0x7A).with_suffix(".dbf")
    assert detect_dbf_encoding(dbf, "not-an-encoding") == ("gbk", "ldid")


def test_gdal_warnings_are_reported_not_raised(tmp_path):
    path = write_layer(tmp_path / "cells.gpkg")
    with path.open("r+b") as f:
        f.seek(68)  # SQLite header field application_id, "GPKG" in a conforming GeoPackage
        f.write(b"\0\0\0\0")
    source = read_features(path)
    assert len(source.features) == 2
    assert len(source.warnings) == 1 and "application_id" in source.warnings[0]


def test_characters_outside_the_declared_encoding_are_substituted(tmp_path):
    # U+20000 exists in GB18030 but not in the GBK the LDID declares. GDAL substitutes it and warns,
    # but only once per process, so the warning itself is not asserted here.
    shp = write_layer(tmp_path / "cells.shp", fields={"NAME": ["\U00020000村", NAMES[1]]}, encoding="GB18030")
    shp.with_suffix(".cpg").unlink()
    set_ldid(shp.with_suffix(".dbf"), 0x4D)
    source = read_features(shp)
    assert source.encoding_source == "ldid"
    assert source.features[0].properties["NAME"] != "\U00020000村"
    assert source.features[1].properties["NAME"] == NAMES[1]


def test_empty_feature_collection_and_null_geometry(tmp_path):
    empty = tmp_path / "empty.geojson"
    empty.write_text('{"type": "FeatureCollection", "features": []}', encoding="utf-8")
    assert read_features(empty).features == []
    null = tmp_path / "null.geojson"
    null.write_text(
        '{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {"n": 1.5}, "geometry": null}]}',
        encoding="utf-8",
    )
    [feature] = read_features(null).features
    assert feature.geom is None and feature.properties == {"n": 1.5}


def test_null_numbers_become_none(tmp_path):
    path = tmp_path / "cells.gpkg"
    wkb = np.array([shapely.to_wkb(g) for g in CELLS], dtype=object)
    raw.write(path, wkb, [np.array([12.5, np.nan])], ["AREA"], geometry_type="Polygon", crs="EPSG:4490")
    assert [f.properties for f in read_features(path).features] == [{"AREA": 12.5}, {"AREA": None}]
