"""Writers of real geodata files for tests (pyogrio/GDAL), shared by the geo and CLI tests."""
import json
import zipfile

import numpy as np
import pytest
import shapely
from pyogrio import raw


def write_layer(path, geoms, fields, crs="EPSG:4490", **kwargs):
    """Write polygons and string fields with pyogrio; GDAL derives the format from the suffix."""
    wkb = np.array([shapely.to_wkb(g) for g in geoms], dtype=object)
    columns = [np.array(values, dtype=object) for values in fields.values()]
    if crs is None:
        with pytest.warns(UserWarning, match="'crs' was not provided"):
            raw.write(path, wkb, columns, list(fields), geometry_type="Polygon", **kwargs)
    else:
        raw.write(path, wkb, columns, list(fields), geometry_type="Polygon", crs=crs, **kwargs)
    return path


def zip_shapefile(shp, folder=""):
    """Zip a Shapefile and all its sidecars, optionally inside a folder of the archive."""
    archive = shp.with_name(shp.stem + "-upload.zip")
    with zipfile.ZipFile(archive, "w") as zf:
        for sidecar in sorted(shp.parent.glob(shp.stem + ".*")):
            zf.write(sidecar, f"{folder}{sidecar.name}")
    return archive


def set_ldid(dbf, ldid):
    """Overwrite the DBF language driver id (header byte 29), as other desktop GIS tools write it."""
    data = bytearray(dbf.read_bytes())
    data[29] = ldid
    dbf.write_bytes(bytes(data))


def gbk_shapefile(tmp_path, ldid, geoms, fields):
    """Write the cells with GBK attributes and no .cpg, like files from Chinese ArcGIS/MapGIS desktops."""
    shp = write_layer(tmp_path / "cells.shp", geoms, fields, encoding="GBK")
    shp.with_suffix(".cpg").unlink()
    set_ldid(shp.with_suffix(".dbf"), ldid)
    return shp


def write_geojson(path, geoms, fields, crs_name=None):
    """Write a GeoJSON FeatureCollection by hand (optionally with a legacy `crs` member)."""
    names = list(fields)
    collection = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {n: fields[n][i] for n in names}, "geometry": shapely.geometry.mapping(g)}
        for i, g in enumerate(geoms)
    ]}
    if crs_name:
        collection["crs"] = {"type": "name", "properties": {"name": crs_name}}
    path.write_text(json.dumps(collection, ensure_ascii=False), encoding="utf-8")
    return path


def write_kml(path, geoms, names):
    """Write a KML document by hand: one Placemark with a Polygon per cell, the code as <name>."""
    placemarks = []
    for name, geom in zip(names, geoms):
        coords = " ".join(f"{x},{y}" for x, y in geom.exterior.coords)
        placemarks.append(f"<Placemark><name>{name}</name><Polygon><outerBoundaryIs><LinearRing>"
                          f"<coordinates>{coords}</coordinates></LinearRing></outerBoundaryIs></Polygon></Placemark>")
    path.write_text('<?xml version="1.0" encoding="UTF-8"?><kml xmlns="http://www.opengis.net/kml/2.2">'
                    f"<Document>{''.join(placemarks)}</Document></kml>", encoding="utf-8")
    return path
