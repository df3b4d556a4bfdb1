"""Exports of incidents and grid cells (direct downloads and jobs), with personal data masked by default."""
import os
import tempfile

from flask import Response, current_app, g, stream_with_context, url_for
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from gridapp.api.security import require
from gridapp.errors import PROBLEM_MIME, ExportTooLarge, Forbidden, NotFound, UnmaskReasonRequired
from gridapp.extensions import db
from gridapp.jobs import enqueue
from gridapp.jobs.exports import EXPORT_TIMEOUT_SECONDS, run_export
from gridapp.models import EXPORT_STATES
from gridapp.schemas.common import ProblemSchema
from gridapp.schemas.filters import IncidentFilterArgs
from gridapp.services import export_jobs, exports, maps
from gridapp.services.access import can, scope_prefix
from gridapp.services.filters import IncidentFilter

blp = Blueprint("exports", __name__, url_prefix="/api/v1/exports",
                description="Exports for GIS tools and spreadsheets (docs/exports.md)")

FILE_RESPONSE = {"200": {"description": "the file, streamed",
                         "content": {media: {"schema": {"type": "string", "format": "binary"}}
                                     for media in sorted(set(exports.MEDIA_TYPES.values()))}}}


class ExportArgs(IncidentFilterArgs):
    srs = fields.Integer(load_default=4326, validate=validate.OneOf((4326, 4490)),
                         metadata={"description": "GeoPackage/Shapefile CRS label: 4326 (WGS84) or 4490 (CGCS2000)"})
    unmasked = fields.Boolean(load_default=False, metadata={"description": "real personal data (needs "
                                                                            "personal_data.unmask and a reason)"})
    reason = fields.String(validate=validate.Length(max=500), metadata={"description": "why unmasked data is needed"})


class JobRequestSchema(ExportArgs):
    layer = fields.String(required=True, validate=validate.OneOf(exports.LAYERS))
    format = fields.String(required=True, validate=validate.OneOf(exports.FORMATS))


class JobSchema(Schema):
    id = fields.UUID()
    layer = fields.String()
    format = fields.String()
    state = fields.String(validate=validate.OneOf(EXPORT_STATES))
    rows_total = fields.Integer(allow_none=True)
    rows_done = fields.Integer()
    unmasked = fields.Boolean()
    error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)
    expires_at = fields.DateTime(allow_none=True)
    download_url = fields.String(allow_none=True, metadata={"description": "signed; works until expires_at"})


def _check_unmask(args) -> bool:
    if not args["unmasked"]:
        return False
    if not can(g.principal, "personal_data.unmask"):
        raise Forbidden("Your role may not export unmasked personal data.")
    if not (args.get("reason") or "").strip():
        raise UnmaskReasonRequired()
    return True


def _direct(layer_name: str, fmt: str, args: dict):
    layer = exports.LAYER_BY_NAME[layer_name]
    flt, prefix = IncidentFilter.from_args(args), scope_prefix(g.principal)
    unmasked = _check_unmask(args)
    rows = exports.count_rows(layer, flt, prefix)
    limit = current_app.config["EXPORT_MAX_DIRECT_ROWS"]
    if rows > limit:
        raise ExportTooLarge(rows=rows, limit=limit, hint="POST /api/v1/exports")
    if unmasked:
        exports.log_unmasked(g.user, f"export.{layer_name}.{fmt}", args["reason"].strip(), flt)
    db.session.commit()  # the access-log record is stored before any row leaves
    export = exports.Export(layer, flt, prefix, unmasked, args["srs"])
    filename = f"{layer_name}.{exports.EXTENSIONS[fmt]}"
    headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
    if fmt in exports.STREAMED:
        chunks = (exports.as_bytes(chunk) for chunk in exports.STREAMED[fmt](export))
        return Response(stream_with_context(chunks), mimetype=exports.MEDIA_TYPES[fmt], headers=headers)
    # A fresh directory: the writers create the file themselves (SQLite needs one that does not exist).
    path = os.path.join(tempfile.mkdtemp(prefix="gridapp-export-"), filename)
    try:
        exports.FILE_WRITERS[fmt](export, path)
    except Exception:
        _remove(path)
        raise
    db.session.rollback()
    return Response(file_chunks(path, delete=True), mimetype=exports.MEDIA_TYPES[fmt], headers=headers)


def _remove(path: str) -> None:
    """Delete a temporary file and its directory."""
    if os.path.exists(path):
        os.remove(path)
    os.rmdir(os.path.dirname(path))


def file_chunks(path: str, delete: bool = False, size: int = 1 << 16):
    """Yield a file in chunks (bounded memory); delete it (and its temporary directory) afterwards."""
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(size):
                yield chunk
    finally:
        if delete:
            _remove(path)


def _doc(view):
    return blp.doc(responses=FILE_RESPONSE)(
        blp.alt_response(422, schema=ProblemSchema, content_type=PROBLEM_MIME,
                         description="export.too_large, export.reason_required, validation_error")(view))


@blp.route("/incidents.<any(geojson, gpkg, shp, kml, csv, xlsx):fmt>")
@require("export.read")
@blp.arguments(ExportArgs, location="query")
@_doc
def export_incidents(args, fmt):
    """Download incidents matching the filter (same filter as the dashboard), personal data masked."""
    return _direct("incidents", fmt, args)


@blp.route("/cells.<any(geojson, gpkg, shp, kml, csv, xlsx):fmt>")
@require("export.read")
@blp.arguments(ExportArgs, location="query")
@_doc
def export_cells(args, fmt):
    """Download the current grid cells of the area (filters: area, cell)."""
    return _direct("cells", fmt, args)


def _job_view(job) -> dict:
    data = {c: getattr(job, c) for c in ("id", "layer", "format", "state", "rows_total", "rows_done", "unmasked",
                                         "error", "created_at", "finished_at", "expires_at")}
    data["download_url"] = (url_for("exports.download_export", token=export_jobs.download_token(job), _external=True)
                            if job.state == "done" else None)
    return data


@blp.route("", methods=["POST"])
@require("export.read")
@blp.arguments(JobRequestSchema)
@blp.response(202, JobSchema)
@blp.alt_response(422, schema=ProblemSchema, content_type=PROBLEM_MIME, description="export.reason_required")
def create_export(body):
    """Start an export job (any size); poll it for progress and its download link."""
    unmasked = _check_unmask(body)
    job = export_jobs.create_job(g.user, body["layer"], body["format"], IncidentFilter.from_args(body),
                                 scope_prefix(g.principal), unmasked=unmasked,
                                 reason=(body.get("reason") or "").strip() or None, srs_id=body["srs"])
    db.session.commit()
    enqueue(run_export, str(job.id), job_timeout=EXPORT_TIMEOUT_SECONDS)
    return _job_view(job)


@blp.route("/<uuid:job_id>")
@require("export.read")
@blp.response(200, JobSchema)
@blp.alt_response(404, schema=ProblemSchema, content_type=PROBLEM_MIME, description="export.not_found")
def get_export(job_id):
    """An export job's state and progress; `download_url` once done."""
    return _job_view(export_jobs.job_for(g.user, job_id))


@blp.route("/download/<string:token>")
@blp.doc(security=[], responses=FILE_RESPONSE)
@blp.alt_response(403, schema=ProblemSchema, content_type=PROBLEM_MIME, description="export.link_invalid")
@blp.alt_response(409, schema=ProblemSchema, content_type=PROBLEM_MIME, description="export.not_ready")
def download_export(token):
    """Download a finished export with its signed link (no bearer token: the link is the credential)."""
    job = export_jobs.job_for_download(token)
    name = f"{job.layer}.{exports.EXTENSIONS[job.format]}"
    return Response(file_chunks(job.file_path), mimetype=exports.MEDIA_TYPES[job.format],
                    headers={"Content-Disposition": f'attachment; filename="{name}"',
                             "Content-Length": str(os.path.getsize(job.file_path))})


class MapArgs(IncidentFilterArgs):
    by = fields.String(load_default="status", validate=validate.OneOf(("status", "category")))
    density = fields.Boolean(load_default=False, metadata={"description": "per-cell counts (heat) instead of dots"})
    title = fields.String(validate=validate.Length(max=60))


MAP_TYPES = {"png": "image/png", "pdf": "application/pdf"}


@blp.route("/map.<string:fmt>")
@require("export.read")
@blp.arguments(MapArgs, location="query")
@blp.doc(responses={"200": {"description": "the printed map", "content": {
    t: {"schema": {"type": "string", "format": "binary"}} for t in MAP_TYPES.values()}}})
def incident_map(args, fmt):
    """A printed map (map.png or map.pdf) of the filtered incidents over the cells and village outlines."""
    if fmt not in MAP_TYPES:
        raise NotFound()
    path = os.path.join(tempfile.mkdtemp(prefix="gridapp-map-"), f"map.{fmt}")
    try:
        maps.incident_map(IncidentFilter.from_args(args), scope_prefix(g.principal), path, fmt, by=args["by"],
                          density=args["density"], title=args.get("title"))
    except Exception:
        _remove(path)
        raise
    db.session.rollback()
    return Response(file_chunks(path, delete=True), mimetype=MAP_TYPES[fmt],
                    headers={"Content-Disposition": f'attachment; filename="map.{fmt}"'})
