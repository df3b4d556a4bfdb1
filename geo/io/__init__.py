"""Read grid polygons from GeoJSON, Shapefile (plain or zipped), GeoPackage and KML files into EPSG:4326."""

import codecs
import contextlib
import math
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import shapely
from shapely.geometry.base import BaseGeometry

from geo.crs import resolve_crs, to_storage
from geo.errors import CRSRequired, UnreadableFile

SHAPEFILE = "ESRI Shapefile"
_DRIVERS = {
    ".geojson": "GeoJSON",
    ".json": "GeoJSON",
    ".zip": SHAPEFILE,
    ".shp": SHAPEFILE,
    ".gpkg": "GPKG",
    ".kml": "KML",
}
# RFC 7946 section 4 and OGC KML 2.2 both fix the CRS to WGS84 lon, lat.
_WGS84_BY_SPEC = ("GeoJSON", "KML")
# Styling columns GDAL's LIBKML driver adds to every KML layer; they are never grid attributes.
_KML_STYLE_FIELDS = {
    "timestamp", "begin", "end", "altitudeMode", "tessellate", "extrude", "visibility", "drawOrder", "icon"
}

# DBF language driver ids (header byte 29) that name a code page. 0x00 and 0x57 ("ANSI") are
# written by default by many tools whatever the data, so they count as undeclared.
_LDID_ENCODINGS = {
    0x01: "cp437",
    0x02: "cp850",
    0x03: "cp1252",
    0x13: "cp932",
    0x4D: "cp936",
    0x4E: "cp949",
    0x4F: "cp950",
    0x50: "cp874",
    0x78: "cp950",
    0x79: "cp949",
    0x7A: "cp936",
    0x7B: "cp932",
    0x7C: "cp874",
    0xC8: "cp1250",
    0xC9: "cp1251",
}
# Chinese desktop GIS often labels GBK data "GB2312"; GBK is a superset, so decode with it.
_WIDER_ENCODINGS = {"gb2312": "gbk"}


@dataclass(frozen=True)
class Feature:
    """One record: its attributes and its geometry in EPSG:4326 lon, lat (Z kept as read, None if absent)."""

    properties: dict
    geom: BaseGeometry | None


@dataclass
class FeatureSource:
    """Everything read from one layer of a file, with how it was interpreted.

    ``encoding_source`` says how a Shapefile's attribute encoding was chosen: "cpg", "ldid",
    "utf-8" (the DBF decodes as strict UTF-8) or "gb18030" (fallback). ``warnings`` holds GDAL's
    warnings for the operator's preview; GDAL reports undecodable characters only once per process,
    so check the preview of the name column too.
    """

    features: list[Feature]
    source_crs: str
    driver: str
    layer: str
    encoding: str | None = None
    encoding_source: str | None = None
    warnings: list[str] = field(default_factory=list)


def read_features(path, crs=None, layer=None):
    """Read every feature of one layer of a file and reproject it to EPSG:4326 lon, lat.

    The format comes from the suffix: .geojson/.json, .shp (sidecars beside it), .zip (one
    zipped Shapefile), .gpkg or .kml.

    :param path: path of the file.
    :param crs: CRS of the coordinates, anything geo.crs.resolve_crs accepts; overrides the file's own.
    :param layer: layer name, needed when a file has several layers with geometries.
    :returns: FeatureSource.
    :raises UnreadableFile: for an unknown suffix, a corrupt file, an unsafe or unsuitable zip,
        an unknown layer, or several layers and no ``layer``.
    :raises CRSRequired: if the file declares no CRS and ``crs`` is None.
    :raises UnsupportedCRS: if ``crs`` or the file's CRS cannot be parsed.
    """
    import pyogrio.raw  # imported when a file is read: its bundled GDAL costs every process 30 MB otherwise
    from pyogrio.errors import DataLayerError, DataSourceError

    with _gdal_warnings() as caught, _dataset(path) as (dataset, driver):
        if layer is None:
            layer = _only_layer(dataset)
        encoding, encoding_source = _shapefile_encoding(dataset) if driver == SHAPEFILE else (None, None)
        try:
            meta, _, wkb, columns = pyogrio.raw.read(dataset, layer=layer, encoding=encoding)
        except (DataSourceError, DataLayerError, UnicodeDecodeError) as exc:
            raise UnreadableFile(f"Cannot read {Path(path).name}: {exc}", path=str(path)) from exc
    if wkb is None:
        raise UnreadableFile(f"Layer {layer!r} of {Path(path).name} has no geometries.", path=str(path))
    src = _source_crs(meta["crs"], crs, driver)
    geoms = to_storage(shapely.from_wkb(wkb), src)
    values = {
        str(name): column.tolist()
        for name, column in zip(meta["fields"], columns)
        if not (driver == "KML" and name in _KML_STYLE_FIELDS)
    }
    features = [Feature({k: _plain(v[n]) for k, v in values.items()}, g) for n, g in enumerate(geoms)]
    authority = src.to_authority()
    return FeatureSource(
        features=features,
        source_crs=":".join(authority) if authority else src.name,
        driver=driver,
        layer=str(layer),
        encoding=encoding,
        encoding_source=encoding_source,
        warnings=list(dict.fromkeys(str(w.message) for w in caught)),
    )


def layers(path):
    """List the names of the layers with geometries in a file (a GeoPackage may have several).

    :raises UnreadableFile: for an unknown suffix or a file GDAL cannot open.
    """
    with _gdal_warnings(), _dataset(path) as (dataset, _):
        return _spatial_layers(dataset)


def detect_dbf_encoding(dbf_path, cpg_text=None):
    """Choose the text encoding of a Shapefile's DBF: .cpg, else language driver id, else UTF-8, else GB18030.

    :param dbf_path: path of the .dbf file.
    :param cpg_text: contents of the sibling .cpg file, if there is one (e.g. "GBK", "936", "UTF-8").
    :returns: (Python codec name such as "gbk" or "utf-8", source) with source one of
        "cpg", "ldid", "utf-8", "gb18030".
    :raises UnreadableFile: if the DBF cannot be read or is too short to have a header.
    """
    declared = _codec_name(cpg_text) if cpg_text else None
    if declared:
        return declared, "cpg"
    try:
        data = Path(dbf_path).read_bytes()
    except OSError as exc:
        raise UnreadableFile(f"Cannot read {Path(dbf_path).name}: {exc}", path=str(dbf_path)) from exc
    if len(data) < 32:
        raise UnreadableFile(f"{Path(dbf_path).name} is not a DBF file.", path=str(dbf_path))
    if data[29] in _LDID_ENCODINGS:
        return _codec_name(_LDID_ENCODINGS[data[29]]), "ldid"
    header_length = int.from_bytes(data[8:10], "little")
    # Field names (11 bytes at the start of each 32-byte descriptor) can be Chinese too; the rest of
    # a descriptor is binary and would fail any text decoding.
    descriptors = data[32 : max(32, header_length - 1)]
    field_names = b"".join(descriptors[i : i + 11].split(b"\0")[0] for i in range(0, len(descriptors), 32))
    try:
        (field_names + data[header_length:]).decode("utf-8")
    except UnicodeDecodeError:
        return "gb18030", "gb18030"
    return "utf-8", "utf-8"


def _codec_name(label):
    label = label.strip().lstrip("\ufeff")
    if label.isdigit():
        # ESRI writes Windows code pages as bare numbers and ISO 8859-n as "8859n".
        label = f"iso8859_{label[4:]}" if label.startswith("8859") else f"cp{label}"
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    return _WIDER_ENCODINGS.get(name, name)


def _shapefile_encoding(shp):
    dbf = _sidecar(shp, ".dbf")
    if dbf is None:
        return None, None
    cpg = _sidecar(shp, ".cpg")
    cpg_text = cpg.read_bytes().decode("utf-8-sig", errors="replace") if cpg else None
    return detect_dbf_encoding(dbf, cpg_text)


def _sidecar(shp, suffix):
    for candidate in (shp.with_suffix(suffix), shp.with_suffix(suffix.upper())):
        if candidate.is_file():
            return candidate
    return None


@contextlib.contextmanager
def _gdal_warnings():
    # pyogrio turns GDAL warnings (undecodable characters, odd headers) into Python warnings raised
    # inside a C callback, where an "error" filter cannot raise them and they surface as unraisable
    # exceptions; record them instead. catch_warnings is process-global, so keep imports off
    # request threads (they run in a worker).
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


@contextlib.contextmanager
def _dataset(path):
    path = Path(path)
    driver = _DRIVERS.get(path.suffix.lower())
    if driver is None:
        raise UnreadableFile(
            f"Unsupported file type {path.suffix or '(none)'!r}; expected one of {', '.join(_DRIVERS)}.",
            path=str(path),
        )
    if path.suffix.lower() != ".zip":
        yield path, driver
        return
    with tempfile.TemporaryDirectory(prefix="geo-import-") as tmp:
        yield _extract_shapefile(path, Path(tmp)), driver


def _extract_shapefile(archive, dest):
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.namelist()
            for name in members:
                parts = PurePosixPath(name.replace("\\", "/")).parts
                if name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                    raise UnreadableFile(f"The archive has an unsafe member path {name!r}.", member=name)
            # macOS archivers add "__MACOSX/._x.shp" resource forks next to the real files.
            shps = [n for n in members if n.lower().endswith(".shp") and not n.startswith("__MACOSX/")]
            if len(shps) != 1:
                raise UnreadableFile(
                    f"The archive must hold exactly one .shp file, it holds {len(shps)}.", shapefiles=shps
                )
            stem = shps[0][: -len(".shp")]
            zf.extractall(dest, members=[n for n in members if n.rsplit(".", 1)[0] == stem])
    except (zipfile.BadZipFile, OSError, RuntimeError, NotImplementedError) as exc:
        # RuntimeError: encrypted members; NotImplementedError: unsupported compression.
        raise UnreadableFile(f"Cannot unpack {Path(archive).name}: {exc}", path=str(archive)) from exc
    return dest / shps[0]


def _spatial_layers(dataset):
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    try:
        listed = pyogrio.list_layers(dataset)
    except (DataSourceError, DataLayerError) as exc:
        raise UnreadableFile(f"Cannot open {dataset.name}: {exc}", path=str(dataset)) from exc
    return [str(name) for name, geometry_type in listed if geometry_type is not None]


def _only_layer(dataset):
    names = _spatial_layers(dataset)
    if len(names) != 1:
        raise UnreadableFile(
            f"{dataset.name} has {len(names)} layers with geometries ({', '.join(names) or 'none'}); choose one.",
            layers=names,
        )
    return names[0]


def _source_crs(declared, override, driver):
    if override is not None:
        return resolve_crs(override)
    if declared:
        return resolve_crs(declared)
    if driver in _WGS84_BY_SPEC:
        return resolve_crs(4326)
    raise CRSRequired(
        "The file does not say which coordinate system it uses (no .prj or undefined SRS); give the CRS, "
        "e.g. EPSG:4490 or the CGCS2000 Gauss-Krüger zone."
    )


def _plain(value):
    # Null numbers come back as NaN, which is not JSON; nulls of other types are already None.
    return None if isinstance(value, float) and math.isnan(value) else value
