"""Pages of features for the OGC API: the export layers' fields (masked), keyset paging on a unique key."""
import json
from dataclasses import replace
from datetime import datetime, timedelta

from gridapp.services import exports
from gridapp.services.filters import IncidentFilter
from gridapp.services.rawsql import cursor

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
COLLECTIONS = {
    "cells": {"title": "单元网格 grid cells", "description": "Current unit-grid cells (15-digit codes).",
              "layer": exports.CELLS, "key": "c.code", "id": "code"},
    "incidents": {"title": "事件 incidents", "description": "Incidents; personal data masked.",
                  "layer": exports.INCIDENTS, "key": "i.case_number", "id": "id"},
}


def instant_filter(flt: IncidentFilter, moment: datetime) -> IncidentFilter:
    """An OGC instant matches the whole second it names."""
    return replace(flt, start=moment, end=moment + timedelta(seconds=1))


def extent(cid: str, prefix: str) -> list[float]:
    meta = COLLECTIONS[cid]
    layer = meta["layer"]
    where, params = exports.where_for(layer, IncidentFilter(), prefix)
    with cursor() as cur:
        cur.execute(f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM (SELECT ST_Extent("
                    f"{layer.geometry_column}) AS e FROM {layer.from_sql} WHERE {where}) x", params)
        box = cur.fetchone()
    return list(box) if box and box[0] is not None else [-180.0, -90.0, 180.0, 90.0]


def _features(cid: str, where: str, params: dict, tail: str) -> list[tuple[str, dict]]:
    meta = COLLECTIONS[cid]
    layer = meta["layer"]
    names = layer.field_names
    mask = exports.masker(layer, unmasked=False)
    geometry = ("ST_AsGeoJSON({g}, 7)" if layer.geometry_type == "POINT" else "ST_AsGeoJSON(ST_ForcePolygonCCW({g}), 7)")
    columns = ", ".join(e for _, e, _ in layer.fields) + ", " + geometry.format(g=layer.geometry_column)
    columns += f", {meta['key']}"
    with cursor() as cur:
        cur.execute(f"SELECT {columns} FROM {layer.from_sql} WHERE {where} {tail}", params)
        rows = cur.fetchall()
    features = []
    for row in rows:
        values = list(row[:len(names)])
        if mask:
            mask(values)
        properties = dict(zip(names, values))
        features.append((row[-1], {"type": "Feature", "id": properties[meta["id"]],
                                   "geometry": json.loads(row[len(names)]), "properties": properties}))
    return features


def page(cid: str, flt: IncidentFilter, prefix: str, limit: int, after: str | None) -> tuple[list[dict], str | None]:
    """Up to `limit` features after the cursor, in key order; return them and the last key."""
    layer = COLLECTIONS[cid]["layer"]
    key = COLLECTIONS[cid]["key"]
    where, params = exports.where_for(layer, flt, prefix)
    if after:
        where += f" AND {key} > %(after)s"
        params["after"] = after
    params["limit"] = limit
    rows = _features(cid, where, params, f"ORDER BY {key} LIMIT %(limit)s")
    return [f for _, f in rows], (rows[-1][0] if rows else None)


def one(cid: str, feature_id: str, prefix: str) -> dict | None:
    layer = COLLECTIONS[cid]["layer"]
    where, params = exports.where_for(layer, IncidentFilter(), prefix)
    where += " AND c.code = %(fid)s" if cid == "cells" else " AND i.id = %(fid)s::uuid"
    params["fid"] = feature_id
    rows = _features(cid, where, params, "")
    return rows[0][1] if rows else None
