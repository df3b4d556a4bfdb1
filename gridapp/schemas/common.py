"""Shapes shared by every endpoint: the problem document and GeoJSON pieces."""
from marshmallow import Schema, fields


class ProblemSchema(Schema):
    """application/problem+json body of every error."""

    type = fields.String()
    title = fields.String()
    status = fields.Integer()
    code = fields.String(metadata={"description": "Stable dotted error code, e.g. grid.not_found"})
    message = fields.String()
    detail = fields.String()
    details = fields.Dict()


class GeoJSONGeometrySchema(Schema):
    """An RFC 7946 geometry (lon, lat in WGS84)."""

    type = fields.String(required=True)
    coordinates = fields.List(fields.Raw(), required=True)


class LinkSchema(Schema):
    rel = fields.String()
    href = fields.String()
    type = fields.String()


class AreaRefSchema(Schema):
    """A short reference to an administrative area."""

    code = fields.String()
    name = fields.String()
