"""Exceptions raised by the geo package; the app maps them to HTTP errors."""


class GeometryError(ValueError):
    """Base for every geo error; ``code`` is a stable identifier that API clients can match on."""

    code = "geo.error"

    def __init__(self, message, **details):
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidGeometry(GeometryError):
    """A geometry is malformed, empty, of the wrong type or invalid; ``details["reason"]`` says why."""

    code = "geo.invalid_geometry"


class UnsupportedCRS(GeometryError):
    """A coordinate reference system is unknown or cannot be parsed."""

    code = "geo.unsupported_crs"


class CRSRequired(GeometryError):
    """A file declares no CRS and the caller gave none."""

    code = "geo.crs_required"


class UnreadableFile(GeometryError):
    """A file has an unknown format, is corrupt, or is an unusable archive."""

    code = "geo.unreadable_file"


class OutsideChina(GeometryError):
    """A GCJ-02/BD-09 conversion was asked for a point outside China, where they are undefined."""

    code = "geo.outside_china"
