"""OGC API – Features Part 1 (Core, GeoJSON, OpenAPI 3.0) for grid cells and incidents, for QGIS,
ArcGIS and GDAL (`OAPIF:`), behind the same bearer token and with personal data masked."""
import json
import re
from datetime import datetime

from flask import Response, g, request, url_for
from flask_smorest import Blueprint
from marshmallow import ValidationError, fields, validate, validates_schema
from webargs.fields import DelimitedList

from gridapp.api.security import require
from gridapp.errors import CollectionNotFound, GridNotFound, IncidentNotFound, ValidationFailed
from gridapp.schemas.filters import IncidentFilterArgs
from gridapp.services import ogc
from gridapp.services.access import scope_prefix
from gridapp.services.filters import IncidentFilter

blp = Blueprint("ogc", __name__, url_prefix="/api/v1/ogc", description="OGC API – Features (Part 1)")
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
]
JSON_DOC = {"200": {"description": "JSON", "content": {"application/json": {"schema": {"type": "object"}}}}}
GEOJSON_DOC = {"200": {"description": "GeoJSON",
                       "content": {"application/geo+json": {"schema": {"type": "object"}}}}}


class ItemsArgs(IncidentFilterArgs):
    bbox = DelimitedList(fields.Float(allow_nan=False), validate=validate.Length(equal=4),
                         metadata={"description": "min_lon,min_lat,max_lon,max_lat (CRS84)"})
    datetime = fields.String(metadata={"description": "an instant or an interval a/b, '..' open (incidents: "
                                                      "received time)"})
    limit = fields.Integer(load_default=ogc.DEFAULT_LIMIT, validate=validate.Range(min=1, max=ogc.MAX_LIMIT))
    after = fields.String(validate=validate.Length(max=40), metadata={"description": "paging cursor (next link)"})

    @validates_schema
    def check_bbox(self, data, **kwargs):
        bbox = data.get("bbox")
        if bbox and not (-180 <= bbox[0] <= bbox[2] <= 180 and -90 <= bbox[1] <= bbox[3] <= 90):
            raise ValidationError("Expected min_lon,min_lat,max_lon,max_lat within CRS84 bounds.", "bbox")


def _json(data, mimetype="application/json") -> Response:
    return Response(json.dumps(data, ensure_ascii=False, default=str), mimetype=mimetype)


def _link(rel, endpoint, mimetype="application/json", title=None, **values) -> dict:
    link = {"rel": rel, "type": mimetype, "href": url_for(endpoint, _external=True, **values)}
    if title:
        link["title"] = title
    return link


def parse_datetime(value: str) -> tuple[datetime | None, datetime | None]:
    """An OGC `datetime`: an instant, or start/end with '..' (or empty) for an open end."""
    def instant(text):
        if text in ("", ".."):
            return None
        try:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValidationFailed(fields={"datetime": ["RFC 3339 date-times, e.g. 2026-11-01T00:00:00Z/.."]}) from exc
        if parsed.tzinfo is None:
            raise ValidationFailed(fields={"datetime": ["Give a time zone (Z or +08:00)."]})
        return parsed
    if "/" in value:
        start, end = (instant(part) for part in value.split("/", 1))
        return start, end
    moment = instant(value)
    return moment, moment


def _collection(cid: str) -> dict:
    meta = ogc.COLLECTIONS[cid]
    return {"id": cid, "title": meta["title"], "description": meta["description"], "itemType": "feature",
            "crs": ["http://www.opengis.net/def/crs/OGC/1.3/CRS84"],
            "extent": {"spatial": {"bbox": [ogc.extent(cid, scope_prefix(g.principal))],
                                   "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}},
            "links": [_link("self", "ogc.collection", collection_id=cid),
                      _link("items", "ogc.items", "application/geo+json", collection_id=cid)]}


def _check(cid: str) -> None:
    if cid not in ogc.COLLECTIONS:
        raise CollectionNotFound(id=cid)


@blp.route("")
@require("ogc.read")
@blp.doc(responses=JSON_DOC)
def landing():
    """Landing page with the service-desc, conformance and data links."""
    return _json({"title": "gridapp OGC API – Features", "description": "Grid cells and incidents (masked).",
                  "links": [_link("self", "ogc.landing"),
                            {"rel": "service-desc", "type": "application/vnd.oai.openapi+json;version=3.0",
                             "href": url_for("api-docs.openapi_json", _external=True)},
                            _link("conformance", "ogc.conformance"), _link("data", "ogc.collections")]})


@blp.route("/conformance")
@require("ogc.read")
@blp.doc(responses=JSON_DOC)
def conformance():
    """The conformance classes implemented."""
    return _json({"conformsTo": CONFORMANCE})


@blp.route("/collections")
@require("ogc.read")
@blp.doc(responses=JSON_DOC)
def collections():
    """The two collections: cells and incidents."""
    return _json({"links": [_link("self", "ogc.collections")], "collections": [_collection(c) for c in ogc.COLLECTIONS]})


@blp.route("/collections/<string:collection_id>")
@require("ogc.read")
@blp.doc(responses=JSON_DOC)
def collection(collection_id):
    """One collection's description and extent."""
    _check(collection_id)
    return _json(_collection(collection_id))


@blp.route("/collections/<string:collection_id>/items")
@require("ogc.read")
@blp.arguments(ItemsArgs, location="query")
@blp.doc(responses=GEOJSON_DOC)
def items(args, collection_id):
    """Features of a collection: bbox, datetime, limit and the shared filters; `next` link for paging."""
    _check(collection_id)
    start, end = parse_datetime(args["datetime"]) if args.get("datetime") else (None, None)
    flt = IncidentFilter.from_args({**args, "start": start, "end": end})
    if start is not None and start == end:  # an instant: the second it names
        flt = ogc.instant_filter(flt, start)
    features, last_key = ogc.page(collection_id, flt, scope_prefix(g.principal), args["limit"], args.get("after"))
    query = {k: v for k, v in request.args.items() if k != "after"}
    links = [{"rel": "self", "type": "application/geo+json", "href": request.url}]
    if len(features) == args["limit"]:
        links.append(_link("next", "ogc.items", "application/geo+json", collection_id=collection_id,
                           **{**query, "after": last_key}))
    return _json({"type": "FeatureCollection", "features": features, "numberReturned": len(features),
                  "timeStamp": datetime.now().astimezone().isoformat(timespec="seconds"), "links": links},
                 "application/geo+json")


@blp.route("/collections/<string:collection_id>/items/<string:feature_id>")
@require("ogc.read")
@blp.doc(responses=GEOJSON_DOC)
def item(collection_id, feature_id):
    """One feature (a cell by its 15-digit code, an incident by its id)."""
    _check(collection_id)
    feature = None
    if collection_id == "cells" and re.fullmatch(r"[0-9]{15}", feature_id):
        feature = ogc.one(collection_id, feature_id, scope_prefix(g.principal))
    elif collection_id == "incidents" and re.fullmatch(r"[0-9a-fA-F-]{36}", feature_id):
        feature = ogc.one(collection_id, feature_id, scope_prefix(g.principal))
    if feature is None:
        raise (GridNotFound if collection_id == "cells" else IncidentNotFound)(id=feature_id)
    feature["links"] = [{"rel": "self", "type": "application/geo+json", "href": request.url},
                        _link("collection", "ogc.collection", collection_id=collection_id)]
    return _json(feature, "application/geo+json")
