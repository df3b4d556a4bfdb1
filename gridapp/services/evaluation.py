"""综合评价 (DOMAIN.md §2.4): counters and rates per township, squad, grid worker and dispatcher for a
period, computed from the append-only workflow events. The formulas are written out in
docs/evaluation.md; every rate is None when its denominator is zero (nothing to rate, not 0 %).

The period [start, end) selects cases by their registration (立案) time; they are judged as of
`as_of` = min(end, now): a case closed after the period ends does not improve that period's report."""
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from flask import current_app

from gridapp.models import utcnow
from gridapp.services.filters import IncidentFilter, incident_where
from gridapp.services.rawsql import cursor

CLOSING = ("incident.pass_check", "incident.self_handle")

_CASES_SQL = """
WITH facts AS (
  SELECT i.id, i.case_number, i.township_id, i.assigned_squad_id, i.due_at, i.category_code_raw, i.description,
    min(e.created_at) FILTER (WHERE e.action IN ('incident.register', 'incident.self_handle')) AS registered_at,
    min(e.created_at) FILTER (WHERE e.action IN ('incident.pass_check', 'incident.self_handle')
                                AND e.created_at < %(as_of)s) AS closed_at,
    bool_or(coalesce((e.details->>'on_time')::boolean, true))
      FILTER (WHERE e.action IN ('incident.pass_check', 'incident.self_handle') AND e.created_at < %(as_of)s) AS on_time,
    min(e.created_at) FILTER (WHERE e.action = 'incident.submit_result' AND e.created_at < %(as_of)s) AS submitted_at,
    count(*) FILTER (WHERE e.action = 'incident.fail_check' AND e.created_at < %(as_of)s) AS reworks,
    count(*) FILTER (WHERE e.action = 'incident.decide_request' AND e.to_status = 'parked' AND e.created_at < %(as_of)s)
      - count(*) FILTER (WHERE e.action = 'incident.resume' AND e.created_at < %(as_of)s) AS parks_open
  FROM incidents i JOIN admin_areas t ON t.id = i.township_id LEFT JOIN grid_cells c ON c.id = i.cell_id
  JOIN incident_events e ON e.incident_id = i.id
  WHERE {where}
  GROUP BY i.id
)
SELECT f.*, t.code AS township_code, t.name AS township_name, s.id AS squad_id, s.name AS squad_name,
  (SELECT max(d.created_at) FROM incident_events d
    WHERE d.incident_id = f.id AND d.action = 'incident.dispatch' AND d.created_at <= f.submitted_at) AS dispatched_at
FROM facts f JOIN admin_areas t ON t.id = f.township_id LEFT JOIN squads s ON s.id = f.assigned_squad_id
WHERE f.registered_at >= %(start)s AND f.registered_at < %(end)s
"""

_REPORTS_SQL = """
SELECT t.code, t.name, u.username, count(*) AS reported, count(*) FILTER (WHERE i.status <> 'invalid') AS valid
FROM incidents i JOIN admin_areas t ON t.id = i.township_id LEFT JOIN grid_cells c ON c.id = i.cell_id
JOIN users u ON u.id = i.reporter_id
WHERE {where} AND i.received_at >= %(start)s AND i.received_at < %(end)s
GROUP BY t.code, t.name, u.username
"""

_CHECKS_SQL = """
SELECT e.details->>'task_user' AS worker, e.created_at AS requested_at,
  (SELECT min(x.created_at) FROM incident_events x
    WHERE x.incident_id = e.incident_id AND x.action IN ('incident.pass_check', 'incident.fail_check')
      AND x.created_at > e.created_at AND x.created_at < %(as_of)s) AS done_at
FROM incident_events e JOIN incidents i ON i.id = e.incident_id JOIN admin_areas t ON t.id = i.township_id
LEFT JOIN grid_cells c ON c.id = i.cell_id
WHERE {where} AND e.action = 'incident.request_check' AND e.created_at >= %(start)s AND e.created_at < %(end)s
"""

_DISPATCHES_SQL = """
SELECT u.username, e.created_at,
  (SELECT max(r.created_at) FROM incident_events r
    WHERE r.incident_id = e.incident_id AND r.action IN ('incident.register', 'incident.return')
      AND r.created_at <= e.created_at) AS ready_at,
  EXISTS (SELECT 1 FROM incident_events r
    WHERE r.incident_id = e.incident_id AND r.action = 'incident.return' AND r.created_at > e.created_at
      AND r.created_at < %(as_of)s
      AND NOT EXISTS (SELECT 1 FROM incident_events d WHERE d.incident_id = e.incident_id
                        AND d.action = 'incident.dispatch' AND d.created_at > e.created_at
                        AND d.created_at < r.created_at)) AS returned
FROM incident_events e JOIN users u ON u.id = e.actor_id JOIN incidents i ON i.id = e.incident_id
JOIN admin_areas t ON t.id = i.township_id LEFT JOIN grid_cells c ON c.id = i.cell_id
WHERE {where} AND e.action = 'incident.dispatch' AND e.created_at >= %(start)s AND e.created_at < %(end)s
"""


def rate(numerator: int, denominator: int) -> float | None:
    """A percentage rounded to 0.01, or None when there is nothing to rate."""
    return round(100.0 * numerator / denominator, 2) if denominator > 0 else None


@dataclass
class CaseCounters:
    """区域 / 部门 counters (eGova statUnitEval names in docs/evaluation.md)."""

    reported: int = 0  # 上报数
    registered: int = 0  # 立案数
    due: int = 0  # 应结案数: closed, or past their deadline by as_of
    parked: int = 0  # 缓办数 (挂账) among the due ones: taken out of the denominator
    closed: int = 0  # 结案数
    closed_on_time: int = 0  # 按期结案数
    overdue_open: int = 0  # 超期未结数
    handled: int = 0  # 处置数: a result was submitted
    reworked: int = 0  # 返工数: at least one failed check
    handling_hours: list = field(default_factory=list)  # dispatch → first result, per handled case

    def add(self, case: dict, as_of: datetime) -> None:
        closed = case["closed_at"] is not None
        due = closed or (case["due_at"] is not None and case["due_at"] <= as_of)
        parked = due and not closed and case["parks_open"] > 0
        self.registered += 1
        self.due += due
        self.parked += parked
        self.closed += closed
        self.closed_on_time += closed and bool(case["on_time"])
        self.overdue_open += due and not closed and not parked
        if case["submitted_at"] is not None:
            self.handled += 1
            self.reworked += case["reworks"] > 0
            if case["dispatched_at"] is not None:
                self.handling_hours.append((case["submitted_at"] - case["dispatched_at"]).total_seconds() / 3600)

    def as_dict(self) -> dict:
        base = self.due - self.parked
        hours = self.handling_hours
        return {
            "reported": self.reported, "registered": self.registered, "due": self.due, "parked": self.parked,
            "closed": self.closed, "closed_on_time": self.closed_on_time, "overdue_open": self.overdue_open,
            "handled": self.handled, "reworked": self.reworked,
            "closure_rate": rate(self.closed, base),  # 结案率 = 结案数 / (应结案数 − 缓办数)
            "on_time_closure_rate": rate(self.closed_on_time, base),  # 按期结案率
            "rework_rate": rate(self.reworked, self.handled),  # 返工率 = 返工数 / 处置数
            "avg_handling_hours": round(sum(hours) / len(hours), 2) if hours else None,  # 平均处置时长
        }


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime

    @property
    def as_of(self) -> datetime:
        return min(self.end, utcnow())


def _query(sql: str, flt: IncidentFilter, prefix: str, period: Period) -> list[dict]:
    # The period selects by registration / event time here, never by receipt: drop the filter's own range.
    where, params = incident_where(replace(flt, start=None, end=None), prefix)
    params.update(start=period.start, end=period.end, as_of=period.as_of)
    with cursor() as cur:
        cur.execute(sql.format(where=where), params)
        names = [d.name for d in cur.description]
        return [dict(zip(names, row)) for row in cur]


def _ranked(rows: list[dict], *keys: str) -> list[dict]:
    """Sort best first by the rates named (None last) and number the ranks (ties share a rank)."""
    def key(row):
        return tuple((row[k] is None, -(row[k] or 0)) for k in keys)
    rows.sort(key=lambda r: (key(r), r.get("code") or r.get("username") or ""))
    previous, rank = None, 0
    for position, row in enumerate(rows, 1):
        if key(row) != previous:
            rank, previous = position, key(row)
        row["rank"] = rank
    return rows


def evaluate(flt: IncidentFilter, prefix: str, period: Period, *, worst: int = 10) -> dict:
    """Every counter and rate of the period, per township, squad, grid worker and dispatcher."""
    as_of = period.as_of
    cases = _query(_CASES_SQL, flt, prefix, period)
    townships: dict[str, CaseCounters] = defaultdict(CaseCounters)
    names: dict[str, str] = {}
    squads: dict[int, CaseCounters] = defaultdict(CaseCounters)
    squad_names: dict[int, str] = {}
    total = CaseCounters()
    for case in cases:
        townships[case["township_code"]].add(case, as_of)
        names[case["township_code"]] = case["township_name"]
        total.add(case, as_of)
        if case["squad_id"] is not None:
            squads[case["squad_id"]].add(case, as_of)
            squad_names[case["squad_id"]] = case["squad_name"]

    workers: dict[str, dict] = defaultdict(lambda: {"reported": 0, "valid_reports": 0, "checks_due": 0,
                                                    "checks_done": 0, "checks_on_time": 0})
    for row in _query(_REPORTS_SQL, flt, prefix, period):
        townships[row["code"]].reported += row["reported"]
        names[row["code"]] = row["name"]
        total.reported += row["reported"]
        workers[row["username"]]["reported"] += row["reported"]
        workers[row["username"]]["valid_reports"] += row["valid"]
    limit = timedelta(hours=current_app.config["EVALUATION_CHECK_HOURS"])
    for row in _query(_CHECKS_SQL, flt, prefix, period):
        worker = workers[row["worker"]]
        worker["checks_due"] += 1
        if row["done_at"] is not None:
            worker["checks_done"] += 1
            worker["checks_on_time"] += row["done_at"] - row["requested_at"] <= limit

    dispatchers: dict[str, dict] = defaultdict(lambda: {"dispatched": 0, "dispatched_on_time": 0, "returned": 0})
    limit = timedelta(hours=current_app.config["EVALUATION_DISPATCH_HOURS"])
    for row in _query(_DISPATCHES_SQL, flt, prefix, period):
        counters = dispatchers[row["username"]]
        counters["dispatched"] += 1
        counters["dispatched_on_time"] += row["ready_at"] is not None and row["created_at"] - row["ready_at"] <= limit
        counters["returned"] += row["returned"]

    return {
        "period": {"start": period.start, "end": period.end, "as_of": as_of},
        "total": total.as_dict(),
        "townships": _ranked([{"code": code, "name": names[code], **c.as_dict()} for code, c in townships.items()],
                             "on_time_closure_rate", "closure_rate"),
        "squads": _ranked([{"id": sid, "name": squad_names[sid], **c.as_dict()} for sid, c in squads.items()],
                          "on_time_closure_rate", "closure_rate"),
        "grid_workers": _ranked([{
            "username": name, **w, "valid_report_rate": rate(w["valid_reports"], w["reported"]),
            "on_time_check_rate": rate(w["checks_on_time"], w["checks_due"]),  # 按时核查率 = 按时核查数 / 应核查数
        } for name, w in workers.items()], "on_time_check_rate", "valid_report_rate"),
        "dispatchers": _ranked([{
            "username": name, **d, "accurate_dispatch_rate": rate(d["dispatched"] - d["returned"], d["dispatched"]),
            "on_time_dispatch_rate": rate(d["dispatched_on_time"], d["dispatched"]),
        } for name, d in dispatchers.items()], "accurate_dispatch_rate", "on_time_dispatch_rate"),
        "overdue_cases": _worst_overdue(cases, as_of, worst),
    }


def _worst_overdue(cases: list[dict], as_of: datetime, limit: int) -> list[dict]:
    """Open, not parked, past the deadline: the longest overdue first (the 通报's list of worst cases)."""
    late = [c for c in cases if c["closed_at"] is None and c["parks_open"] <= 0 and c["due_at"] is not None
            and c["due_at"] <= as_of]
    late.sort(key=lambda c: c["due_at"])
    return [{"id": c["id"], "case_number": c["case_number"], "township": c["township_name"], "squad": c["squad_name"],
             "category_code": c["category_code_raw"], "description": c["description"], "due_at": c["due_at"],
             "overdue_hours": round((as_of - c["due_at"]).total_seconds() / 3600, 1)} for c in late[:limit]]
