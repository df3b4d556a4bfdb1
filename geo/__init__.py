"""Pure geometry helpers for grid cells: CRS conversion, validation, GeoJSON, topology and file import."""
