from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from webargs.fields import DelimitedList

from geo.crs import POINT_CRS
from gridapp.schemas.common import AreaRefSchema, GeoJSONGeometrySchema, LinkSchema

CELL_CODE = validate.Regexp(r"^[0-9]{15}$", error="A cell code is 15 digits.")


class CellPageArgs(Schema):
    bbox = DelimitedList(
        fields.Float(allow_nan=False),
        validate=validate.Length(equal=4),
        metadata={"description": "min_lon,min_lat,max_lon,max_lat in WGS84 (RFC 7946 order)"},
    )
    limit = fields.Integer(validate=validate.Range(min=1), metadata={"description": "page size"})
    after = fields.String(validate=CELL_CODE, metadata={"description": "return cells whose code sorts after this"})

    @validates_schema
    def check_bbox(self, data, **kwargs):
        bbox = data.get("bbox")
        if bbox is None:
            return
        min_lon, min_lat, max_lon, max_lat = bbox
        if not (-180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
            raise ValidationError("Expected min_lon,min_lat,max_lon,max_lat within WGS84 bounds.", "bbox")


class CellPropertiesSchema(Schema):
    code = fields.String()
    name = fields.String()
    village = fields.Nested(AreaRefSchema)
    township = fields.Nested(AreaRefSchema)
    area_m2 = fields.Float()
    valid_from = fields.DateTime()
    workers = fields.List(fields.Dict(), metadata={"description": "assigned grid workers (single cell only)"})


class CellFeatureSchema(Schema):
    """A grid cell as an RFC 7946 Feature; id is the 15-digit unit-grid code."""

    type = fields.String(required=True, validate=validate.Equal("Feature"))
    id = fields.String(required=True)
    geometry = fields.Nested(GeoJSONGeometrySchema, required=True)
    properties = fields.Nested(CellPropertiesSchema, required=True)


class CellCollectionSchema(Schema):
    type = fields.String(required=True, validate=validate.Equal("FeatureCollection"))
    features = fields.List(fields.Nested(CellFeatureSchema), required=True)
    numberReturned = fields.Integer()
    links = fields.List(fields.Nested(LinkSchema))


class LocateArgs(Schema):
    lon = fields.Float(required=True, allow_nan=False, validate=validate.Range(min=-180, max=180))
    lat = fields.Float(required=True, allow_nan=False, validate=validate.Range(min=-90, max=90))
    crs = fields.String(
        load_default="wgs84",
        validate=validate.OneOf(POINT_CRS),
        metadata={"description": "CRS the point is in; gcj02 (Amap/Tencent) and bd09 (Baidu) are converted"},
    )


class LocateResultSchema(Schema):
    code = fields.String()
    name = fields.String()
    village = fields.Nested(AreaRefSchema)
    township = fields.Nested(AreaRefSchema)
    lon = fields.Float(metadata={"description": "the point in WGS84, as used for the lookup"})
    lat = fields.Float()
