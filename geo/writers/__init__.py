"""Pure writers for the export formats (no Flask, no database): GeoPackage, Shapefile, KML, GeoJSON.

Each takes rows one at a time, so memory stays bounded whatever the row count."""
