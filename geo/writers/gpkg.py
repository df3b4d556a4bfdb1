"""A minimal GeoPackage 1.4 writer on Python's sqlite3: one feature table, geometries as GPKG blobs.

Rows go in with executemany batches inside one transaction, which is what makes it fast; GDAL, QGIS
and ArcGIS read the result as a normal GeoPackage (checked by the tests with ogrinfo)."""
import sqlite3
import struct

APPLICATION_ID = 0x47504B47  # "GPKG"
USER_VERSION = 10400  # 1.4.0

# The two CRSs a supervisor may ask for. CGCS2000 and WGS84 differ by centimetres: same numbers, other label.
SRS = {
    4326: ("WGS 84 geodetic", 'GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563,'
           'AUTHORITY["EPSG","7030"]],AUTHORITY["EPSG","6326"]],PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],'
           'UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],AXIS["Latitude",NORTH],'
           'AXIS["Longitude",EAST],AUTHORITY["EPSG","4326"]]'),
    4490: ("China Geodetic Coordinate System 2000", 'GEOGCS["China Geodetic Coordinate System 2000",'
           'DATUM["China_2000",SPHEROID["CGCS2000",6378137,298.257222101,AUTHORITY["EPSG","1024"]],'
           'AUTHORITY["EPSG","1043"]],PRIMEM["Greenwich",0,AUTHORITY["EPSG","8901"]],'
           'UNIT["degree",0.0174532925199433,AUTHORITY["EPSG","9122"]],AXIS["Latitude",NORTH],'
           'AXIS["Longitude",EAST],AUTHORITY["EPSG","4490"]]'),
}
SQL_TYPES = {"text": "TEXT", "integer": "INTEGER", "real": "REAL"}
_POINT = struct.Struct("<BIdd")


def point_wkb(lon: float, lat: float) -> bytes:
    """Little-endian WKB of a 2D point."""
    return _POINT.pack(1, 1, lon, lat)


def gpkg_blob(wkb: bytes, srs_id: int) -> bytes:
    """Wrap WKB in the GeoPackage binary header (version 0, little-endian, no envelope)."""
    return b"GP\x00\x01" + struct.pack("<i", srs_id) + wkb


class GeoPackageWriter:
    """Write one feature table. Use as a context manager; `add` takes (values, wkb)."""

    BATCH = 2000

    def __init__(self, path: str, table: str, fields: list[tuple[str, str]], geometry_type: str, srs_id: int = 4326,
                 description: str = ""):
        if srs_id not in SRS:
            raise ValueError(f"unsupported srs_id {srs_id}")
        self.table, self.srs_id, self.count = table, srs_id, 0
        self._db = sqlite3.connect(path)
        self._db.execute("PRAGMA journal_mode = OFF")
        self._db.execute("PRAGMA synchronous = OFF")
        self._db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        self._db.execute(f"PRAGMA user_version = {USER_VERSION}")
        self._create_metadata(fields, geometry_type, description)
        columns = ", ".join(f'"{name}"' for name, _ in fields)
        marks = ", ".join("?" for _ in range(len(fields) + 1))
        self._insert = f'INSERT INTO "{table}" (geom, {columns}) VALUES ({marks})'
        self._batch: list[tuple] = []

    def _create_metadata(self, fields, geometry_type, description):
        db = self._db
        db.executescript("""
            CREATE TABLE gpkg_spatial_ref_sys (srs_name TEXT NOT NULL, srs_id INTEGER PRIMARY KEY,
              organization TEXT NOT NULL, organization_coordsys_id INTEGER NOT NULL, definition TEXT NOT NULL,
              description TEXT);
            CREATE TABLE gpkg_contents (table_name TEXT NOT NULL PRIMARY KEY, data_type TEXT NOT NULL,
              identifier TEXT UNIQUE, description TEXT DEFAULT '',
              last_change DATETIME NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
              min_x DOUBLE, min_y DOUBLE, max_x DOUBLE, max_y DOUBLE,
              srs_id INTEGER REFERENCES gpkg_spatial_ref_sys(srs_id));
            CREATE TABLE gpkg_geometry_columns (table_name TEXT NOT NULL, column_name TEXT NOT NULL,
              geometry_type_name TEXT NOT NULL, srs_id INTEGER NOT NULL, z TINYINT NOT NULL, m TINYINT NOT NULL,
              CONSTRAINT pk_geom_cols PRIMARY KEY (table_name, column_name));
        """)
        db.executemany("INSERT INTO gpkg_spatial_ref_sys VALUES (?, ?, ?, ?, ?, ?)", [
            ("Undefined cartesian SRS", -1, "NONE", -1, "undefined", ""),
            ("Undefined geographic SRS", 0, "NONE", 0, "undefined", ""),
            *((name, srid, "EPSG", srid, wkt, "") for srid, (name, wkt) in SRS.items()),
        ])
        columns = ", ".join(f'"{name}" {SQL_TYPES[kind]}' for name, kind in fields)
        db.execute(f'CREATE TABLE "{self.table}" (fid INTEGER PRIMARY KEY AUTOINCREMENT, geom {geometry_type}, {columns})')
        db.execute("INSERT INTO gpkg_contents (table_name, data_type, identifier, description, srs_id) "
                   "VALUES (?, 'features', ?, ?, ?)", (self.table, self.table, description, self.srs_id))
        db.execute("INSERT INTO gpkg_geometry_columns VALUES (?, 'geom', ?, ?, 0, 0)",
                   (self.table, geometry_type, self.srs_id))

    def add(self, values, wkb: bytes | None) -> None:
        self._batch.append((gpkg_blob(wkb, self.srs_id) if wkb is not None else None, *values))
        if len(self._batch) >= self.BATCH:
            self._flush()

    def _flush(self):
        self._db.executemany(self._insert, self._batch)
        self.count += len(self._batch)
        self._batch = []

    def close(self, bbox: tuple[float, float, float, float] | None = None) -> None:
        self._flush()
        if bbox:
            self._db.execute("UPDATE gpkg_contents SET min_x = ?, min_y = ?, max_x = ?, max_y = ?", bbox)
        self._db.commit()
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self._db.close()
