"""风险预警 (early warning) for the dashboard and API clients (docs/early-warning.md)."""
from flask import g
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from gridapp.api.security import require
from gridapp.schemas.filters import IncidentFilterArgs
from gridapp.services import early_warning
from gridapp.services.access import scope_prefix
from gridapp.services.filters import IncidentFilter

blp = Blueprint("early_warning", __name__, url_prefix="/api/v1/warnings", description="风险预警")


class WarningArgs(IncidentFilterArgs):
    by = fields.String(load_default="cell", validate=validate.OneOf(tuple(early_warning.KEYS)))
    at = fields.AwareDateTime(metadata={"description": "end of the 7-day window (default: now)"})


class WarningSchema(Schema):
    by = fields.String()
    key = fields.String(metadata={"description": "cell code or category code"})
    category_name = fields.String(allow_none=True)
    recent_count = fields.Integer(metadata={"description": "incidents in the 7 days before window_end"})
    baseline_weekly_mean = fields.Float(metadata={"description": "weekly mean of the 8 weeks before that"})
    score = fields.Float(metadata={"description": "(recent − mean) / sqrt(max(mean, 1))"})
    window_start = fields.DateTime()
    window_end = fields.DateTime()


@blp.route("")
@require("warning.read")
@blp.arguments(WarningArgs, location="query")
@blp.response(200, WarningSchema(many=True))
def list_warnings(args):
    """Cells (or categories) whose count this week is far above their own baseline, highest first."""
    return early_warning.warnings(IncidentFilter.from_args(args), scope_prefix(g.principal), by=args["by"],
                                  at=args.get("at"))
