"""Chinese labels and time display (stored UTC, shown in the display time zone) for the templates."""
from datetime import datetime
from zoneinfo import ZoneInfo

from flask import current_app

from gridapp.dashboard.session import csrf_token, current_user
from gridapp.models import TIME_UNITS
from gridapp.services import queues

STATUS_LABELS = {
    "reported": "新上报", "verifying": "核实中", "registered": "已立案", "invalid": "已作废",
    "duplicate": "重复件", "dispatched": "已派遣", "returned": "已回退", "handling": "处置中",
    "parked": "已挂账", "handled": "已处置待核查", "checking": "核查中",
    "closed": "已结案",  # never 已解决: closing means checked by the grid worker, not "fixed"
}
CLASS_LABELS = {"new": "新上报", "open": "办理中", "overdue": "已超时", "closed": "已结案", "void": "作废/重复"}
ACTION_LABELS = {
    "request_verification": "派核实", "verify": "核实", "register": "立案", "reject": "不予立案（作废）",
    "merge": "合并为重复件", "dispatch": "派遣", "return": "回退", "accept": "接收",
    "request_extension": "申请延期", "request_park": "申请挂账", "decide_request": "审批申请",
    "resume": "恢复办理", "submit_result": "办结反馈", "request_check": "派核查", "pass_check": "核查通过（结案）",
    "fail_check": "核查不通过（返工）", "self_handle": "自行处置", "supervise": "督办",
    # events recorded by the system
    "route": "自动分拨", "due_soon": "临期提醒", "overdue": "超时督办", "merged_in": "并入重复件",
}
ROLE_LABELS = {"admin": "管理员", "supervisor": "督查员", "dispatcher": "派遣员", "duty_chief": "值班长",
               "squad_leader": "中队长", "squad_member": "执法队员", "grid_worker": "网格员", "system": "系统"}
REQUEST_LABELS = {"extension": "延期", "park": "挂账"}


def local_time(value: datetime | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if value is None:
        return "—"
    return value.astimezone(ZoneInfo(current_app.config["DISPLAY_TIMEZONE"])).strftime(fmt)


def init_app(app):
    app.jinja_env.filters.update(
        local_time=local_time, status_label=lambda s: STATUS_LABELS.get(s, s),
        action_label=lambda a: ACTION_LABELS.get(a.removeprefix("incident."), a),
        role_label=lambda r: ROLE_LABELS.get(r, r), request_label=lambda k: REQUEST_LABELS.get(k, k),
        unit_label=lambda u: TIME_UNITS.get(u, u))

    @app.context_processor
    def dashboard_globals():
        return {"csrf_token": csrf_token, "dashboard_user": current_user, "CLASS_LABELS": CLASS_LABELS,
                "live_etag": queues.live_etag}
