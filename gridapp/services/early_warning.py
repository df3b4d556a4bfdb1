"""风险预警: cells or categories whose incident count in the last week is far above their own baseline.

Method (docs/early-warning.md): for each key (a cell, or a category), count the incidents received in
the 7 days before `at` (recent) and in the BASELINE_WEEKS weeks before that (the baseline; its weekly
mean is the expected count). Counts of rare events are close to Poisson, whose standard deviation is the
square root of the mean, so the score is (recent − mean) / sqrt(max(mean, 1)). A key is flagged when its
score is at least Z_THRESHOLD and its recent count at least MIN_COUNT (three reports are not a trend)."""
import math
from dataclasses import replace
from datetime import datetime, timedelta

from gridapp.models import utcnow
from gridapp.services.filters import IncidentFilter, incident_where
from gridapp.services.rawsql import cursor

BASELINE_WEEKS = 8
Z_THRESHOLD = 3.0
MIN_COUNT = 5
KEYS = {"cell": "c.code", "category": "i.category_code_raw"}


def warnings(flt: IncidentFilter, prefix: str, *, by: str = "cell", at: datetime | None = None,
             z_threshold: float = Z_THRESHOLD, min_count: int = MIN_COUNT) -> list[dict]:
    """Return the flagged keys, highest score first, with their counts, mean and score."""
    at = at or utcnow()
    week = timedelta(days=7)
    where, params = incident_where(replace(flt, start=None, end=None), prefix)
    key = KEYS[by]
    params.update(at=at, recent_from=at - week, baseline_from=at - week * (BASELINE_WEEKS + 1))
    sql = f"""
        SELECT {key} AS key, min(cat.name) AS category_name,
          count(*) FILTER (WHERE i.received_at >= %(recent_from)s) AS recent,
          count(*) FILTER (WHERE i.received_at < %(recent_from)s) AS baseline
        FROM incidents i JOIN admin_areas t ON t.id = i.township_id LEFT JOIN grid_cells c ON c.id = i.cell_id
        LEFT JOIN categories cat ON cat.id = i.category_id
        WHERE {where} AND {key} IS NOT NULL AND i.received_at >= %(baseline_from)s AND i.received_at < %(at)s
        GROUP BY {key}"""
    flagged = []
    with cursor() as cur:
        cur.execute(sql, params)
        for code, category_name, recent, baseline in cur:
            mean = baseline / BASELINE_WEEKS
            score = (recent - mean) / math.sqrt(max(mean, 1.0))
            if recent >= min_count and score >= z_threshold:
                flagged.append({"by": by, "key": code, "category_name": category_name if by == "category" else None,
                                "recent_count": recent, "baseline_weekly_mean": round(mean, 2),
                                "score": round(score, 2), "window_start": at - week, "window_end": at})
    return sorted(flagged, key=lambda w: -w["score"])
