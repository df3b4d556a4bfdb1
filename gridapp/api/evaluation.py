"""综合评价: the counters and rates of a period, and the monthly 通报 as XLSX or PDF (docs/evaluation.md)."""
import os
import tempfile
from datetime import datetime
from zoneinfo import ZoneInfo

from flask import Response, g
from flask_smorest import Blueprint
from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from gridapp.api.exports import file_chunks
from gridapp.api.security import require
from gridapp.errors import NotFound
from gridapp.extensions import db
from gridapp.models import AdminArea
from gridapp.schemas.filters import IncidentFilterArgs
from gridapp.services import evaluation, reports
from gridapp.services.access import scope_prefix
from gridapp.services.filters import IncidentFilter

blp = Blueprint("evaluation", __name__, url_prefix="/api/v1/evaluation", description="综合评价 and the monthly report")
SHANGHAI = ZoneInfo("Asia/Shanghai")
REPORT_TYPES = {"xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "pdf": "application/pdf"}


class EvaluationArgs(IncidentFilterArgs):
    """The shared filter; `start`/`end` (or `month`) here bound the registration (立案) time."""

    month = fields.String(validate=validate.Regexp(r"^[0-9]{4}-(0[1-9]|1[0-2])$", error="YYYY-MM"),
                          metadata={"description": "a calendar month in Asia/Shanghai, instead of start/end"})

    @validates_schema
    def check_period(self, data, **kwargs):
        if not data.get("month") and not (data.get("start") and data.get("end")):
            raise ValidationError("Give month=YYYY-MM, or start and end.", "month")


class PeriodSchema(Schema):
    start = fields.DateTime()
    end = fields.DateTime()
    as_of = fields.DateTime(metadata={"description": "cases are judged as of min(end, now)"})


class OverdueCaseSchema(Schema):
    id = fields.UUID()
    case_number = fields.String()
    township = fields.String()
    squad = fields.String(allow_none=True)
    category_code = fields.String()
    description = fields.String()
    due_at = fields.DateTime()
    overdue_hours = fields.Float()


class EvaluationSchema(Schema):
    period = fields.Nested(PeriodSchema)
    total = fields.Dict()
    townships = fields.List(fields.Dict(), metadata={"description": "ranked by 按期结案率, then 结案率"})
    squads = fields.List(fields.Dict())
    grid_workers = fields.List(fields.Dict())
    dispatchers = fields.List(fields.Dict())
    overdue_cases = fields.List(fields.Nested(OverdueCaseSchema), metadata={"description": "the longest overdue open cases"})


def _period(args) -> evaluation.Period:
    if args.get("month"):
        year, month = map(int, args["month"].split("-"))
        start = datetime(year, month, 1, tzinfo=SHANGHAI)
        end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=SHANGHAI)
        return evaluation.Period(start, end)
    return evaluation.Period(args["start"], args["end"])


def _evaluate(args) -> dict:
    return evaluation.evaluate(IncidentFilter.from_args({**args, "start": None, "end": None}),
                               scope_prefix(g.principal), _period(args))


@blp.route("")
@require("evaluation.read")
@blp.arguments(EvaluationArgs, location="query")
@blp.response(200, EvaluationSchema)
def get_evaluation(args):
    """Counters and rates per township, squad, grid worker and dispatcher for a period, ranked."""
    return _evaluate(args)


@blp.route("/report.<string:fmt>")
@require("evaluation.read")
@blp.arguments(EvaluationArgs, location="query")
@blp.doc(responses={"200": {"description": "the monthly 通报",
                            "content": {t: {"schema": {"type": "string", "format": "binary"}}
                                        for t in REPORT_TYPES.values()}}})
def get_report(args, fmt):
    """The monthly 通报 with ranks and the worst overdue cases, as XLSX (report.xlsx) or PDF (report.pdf)."""
    if fmt not in REPORT_TYPES:
        raise NotFound()
    result = _evaluate(args)
    code = args.get("area") or g.principal.area_code
    area = db.session.scalar(db.select(AdminArea).where(AdminArea.code == code))
    path = os.path.join(tempfile.mkdtemp(prefix="gridapp-report-"), f"report.{fmt}")
    (reports.write_xlsx if fmt == "xlsx" else reports.write_pdf)(result, area.name if area else code, path)
    return Response(file_chunks(path, delete=True), mimetype=REPORT_TYPES[fmt],
                    headers={"Content-Disposition": f'attachment; filename="report.{fmt}"'})
