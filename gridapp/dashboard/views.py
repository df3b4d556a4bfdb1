"""Dashboard views: thin over the domain functions, with the API's permissions and area scope."""
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from flask import (
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from sqlalchemy import select

from gridapp.api.photos import send_photo
from gridapp.dashboard import bp
from gridapp.dashboard.filters import ACTION_LABELS
from gridapp.dashboard.photos import DASHBOARD_VARIANTS, case_photos
from gridapp.dashboard.session import check_csrf, login_required, sign_in, sign_out
from gridapp.errors import AppError, Forbidden, InvalidCredentials, NotFound, ValidationFailed
from gridapp.extensions import db
from gridapp.jobs.dispatch import enqueue_delivery, enqueue_outbox
from gridapp.models import (
    STATUS_CLASSES,
    AdminArea,
    CategoryCondition,
    EnforcementTeam,
    GridCell,
    IncidentEvent,
    ResponsibilityRule,
    Squad,
    User,
    grid_cell_workers,
    utcnow,
)
from gridapp.services import dispatching, early_warning, incidents, maptiles, masking, queues, workflow
from gridapp.services.access import can, scope_prefix
from gridapp.services.auth import check_credentials
from gridapp.services.filters import IncidentFilter
from gridapp.transactions import commit_retrying
from sync import review


@bp.before_request
def csrf_first():
    check_csrf()


@bp.after_request
def no_store(response):
    # Pages show personal data and case details: never cached by the browser or a proxy.
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Frame-Options"] = "DENY"
    return response


# --- sign-in -------------------------------------------------------------------------------------
@bp.route("/login", methods=["GET", "POST"])
def login():
    """Sign in with the same username and password as the API; grid workers are refused (they use phones)."""
    if request.method == "GET":
        return render_template("dashboard/login.html")
    try:
        user = check_credentials(request.form.get("username", ""), request.form.get("password", ""))
    except InvalidCredentials:
        return render_template("dashboard/login.html", error="用户名或密码错误。"), 401
    if not can(user, "incident.read"):
        return render_template("dashboard/login.html", error="网格员请使用手机App，本系统仅供指挥中心和执法人员使用。"), 403
    sign_in(user)
    target = request.args.get("next") or ""
    # Only a local path: never an open redirect.
    return redirect(target if target.startswith("/dashboard/") else url_for("dashboard.queues_page"))


@bp.route("/logout", methods=["POST"])
def logout():
    sign_out()
    return redirect(url_for("dashboard.login"))


# --- queues --------------------------------------------------------------------------------------
@bp.route("/")
@login_required()
def queues_page():
    """Every queue of the dispatch centre in one page; `?partial=1` returns the live region only."""
    prefix = scope_prefix(g.user)
    data = {
        "new_reports": queues.new_reports(prefix), "to_dispatch": queues.to_dispatch(prefix),
        "ownerless": queues.ownerless(prefix), "returned": queues.returned(prefix),
        "requests": queues.pending_requests(prefix), "due_soon": queues.due_soon(prefix),
        "overdue": queues.overdue(prefix), "awaiting_check": queues.awaiting_check(prefix),
    }
    data["duplicates"] = queues.incidents_by_id((i.likely_duplicate_of for i in data["new_reports"]), prefix)
    if can(g.user, "sync.review"):
        data["quarantine"] = review.quarantine_in_scope(prefix)
        data["conflicts"] = review.conflicts_in_scope(prefix)
    if can(g.user, "dispatch.manage"):
        data["dead_letters"] = dispatching.notifications_in_scope(prefix, "dead")
    if request.args.get("partial"):
        return render_template("dashboard/_queues.html", now=utcnow(), **data)
    if can(g.user, "warning.read"):
        everything = IncidentFilter()
        data["warnings"] = early_warning.warnings(everything, prefix, by="cell") + \
            early_warning.warnings(everything, prefix, by="category")
    return render_template("dashboard/queues.html", now=utcnow(), **data)


@bp.route("/live")
@login_required()
def live():
    """The change token as an ETag: pages poll with If-None-Match and refresh their live region on change."""
    etag = queues.live_etag()
    if request.if_none_match.contains(etag):
        response = make_response("", 304)
    else:
        response = make_response({"etag": etag})
    response.set_etag(etag)
    response.headers["Cache-Control"] = "no-cache"
    return response


# --- the map -----------------------------------------------------------------------------------
@bp.route("/map")
@login_required()
def map_page():
    prefix = scope_prefix(g.user)
    villages = db.session.scalars(select(AdminArea).where(AdminArea.level == "village",
                                                          AdminArea.code.startswith(prefix)).order_by(AdminArea.code))
    return render_template("dashboard/map.html", villages=list(villages), squads=_squads(prefix),
                           classes=STATUS_CLASSES)


@bp.route("/map/cells.geojson")
@login_required()
def cells_geojson():
    return current_app.response_class(maptiles.cells_geojson(scope_prefix(g.user)), mimetype="application/geo+json")


@bp.route("/map/villages.geojson")
@login_required()
def villages_geojson():
    return current_app.response_class(maptiles.villages_geojson(scope_prefix(g.user)), mimetype="application/geo+json")


@bp.route("/map/cells/<code>")
@login_required()
def cell_panel(code):
    """The side panel for a clicked cell: its grid worker(s) and open cases."""
    prefix = scope_prefix(g.user)
    cell = db.session.scalar(select(GridCell).where(GridCell.code == code, GridCell.valid_to.is_(None)))
    if cell is None or not code.startswith(prefix):
        raise NotFound()
    workers = db.session.scalars(select(User).join(grid_cell_workers, grid_cell_workers.c.user_id == User.id)
                                 .where(grid_cell_workers.c.cell_id == cell.id, User.is_active)
                                 .order_by(User.username)).all()
    return render_template("dashboard/_cell.html", cell=cell, workers=workers,
                           cases=queues.open_cases_in_cell(cell.id, prefix))


@bp.route("/tiles/<int:z>/<int:x>/<int:y>.mvt")
@login_required()
def tile(z, x, y):
    """One vector tile of incidents (points at z >= 14, counted groups below), limited to the user's area."""
    if not maptiles.valid_tile(z, x, y):
        raise NotFound()
    body = maptiles.incident_tile(scope_prefix(g.user), z, x, y, _tile_filters())
    response = current_app.response_class(body, mimetype="application/vnd.mapbox-vector-tile")
    response.headers["Cache-Control"] = "private, max-age=10"
    return response


def _tile_filters() -> maptiles.TileFilters:
    args = request.args
    classes = tuple(c for c in args.getlist("class") if c)
    if any(c not in STATUS_CLASSES for c in classes):
        raise ValidationFailed(fields={"class": [f"One of {', '.join(STATUS_CLASSES)}."]})
    try:
        return maptiles.TileFilters(
            classes=classes, category=args.get("category") or None,
            village_id=int(args["village"]) if args.get("village") else None,
            squad_id=int(args["squad"]) if args.get("squad") else None,
            since=_day(args.get("since")), until=_day(args.get("until"), end=True))
    except ValueError as exc:
        raise ValidationFailed(fields={"filters": [str(exc)]}) from exc


def _day(value: str | None, end: bool = False) -> datetime | None:
    """A YYYY-MM-DD of the display time zone as a UTC instant (the day's end for `until`)."""
    if not value:
        return None
    start = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=ZoneInfo(current_app.config["DISPLAY_TIMEZONE"]))
    return start + timedelta(days=1) if end else start


# --- one case ----------------------------------------------------------------------------------
@bp.route("/incidents/<uuid:incident_id>")
@login_required()
def case_page(incident_id):
    """Map position, photos, the full history, the deadline and the actions this user may take now."""
    prefix = scope_prefix(g.user)
    incident = incidents.incident_in_scope(incident_id, prefix)
    template = "dashboard/_case.html" if request.args.get("partial") else "dashboard/case.html"
    return render_template(template, incident=incident, actions=workflow.ACTIONS, now=utcnow(),
                           allowed=workflow.allowed_actions(incident, g.user), photos=case_photos(incident),
                           **_case_details(incident, prefix))


@bp.route("/photos/<string:sha256>/<string:variant>")
@login_required("photo.read")
def photo(sha256, variant):
    """A case photo's display image or thumbnail (EXIF-free; originals stay with the API), scope-checked."""
    return send_photo(sha256, variant, g.user, variants=DASHBOARD_VARIANTS)


def _case_details(incident, prefix: str) -> dict:
    """What the case page shows beside the incident: history, position, and the action forms' choices."""
    township_code = db.session.get(AdminArea, incident.township_id).code
    routed = db.session.get(ResponsibilityRule, incident.routed_rule_id) if incident.routed_rule_id else None
    conditions = db.session.scalars(select(CategoryCondition).where(
        CategoryCondition.category_id == incident.category_id).order_by(CategoryCondition.seq)).all()
    return {
        "events": db.session.scalars(select(IncidentEvent).where(IncidentEvent.incident_id == incident.id)
                                     .order_by(IncidentEvent.id)).all(),
        "location": db.session.scalar(select(incident.location.ST_AsGeoJSON())),
        "duplicate": queues.incidents_by_id([incident.likely_duplicate_of], prefix).get(incident.likely_duplicate_of),
        "squads": _squads(township_code), "routed_squad_id": routed.squad_id if routed else None,
        "conditions": conditions,
        # The party's personal data, masked as in every listing (unmasked only by a logged export).
        "party": masking.mask_row({field: getattr(incident, field) for field in masking.PERSONAL_FIELDS}),
    }


def _squads(prefix: str) -> list[Squad]:
    return list(db.session.scalars(select(Squad).join(Squad.team).join(AdminArea, AdminArea.id == EnforcementTeam.township_id)
                                   .where(AdminArea.code.startswith(prefix)).order_by(AdminArea.code, Squad.code)))


# Form fields that are action parameters, with their types (the domain validates the values).
PARAM_FIELDS = {"squad_code": str, "master_id": str, "condition_seq": int, "amount": float,
                "approve": bool, "exists": bool}


def _params(form) -> dict:
    params = {}
    for name, kind in PARAM_FIELDS.items():
        value = form.get(name, "").strip()
        if not value:
            continue
        if kind is bool:
            params[name] = {"true": True, "false": False}.get(value, value)
        elif kind is str:
            params[name] = value
        else:
            try:
                params[name] = kind(value)
            except ValueError:
                params[name] = value  # refused by the action with workflow.invalid_input
    return params


@bp.route("/incidents/<uuid:incident_id>/actions/<action>", methods=["POST"])
@login_required("incident.act")
def act(incident_id, action):
    """Take a workflow action from the case page; refusals are shown on the page, nothing changes."""
    prefix = scope_prefix(g.user)
    def perform():
        event = workflow.perform(incident_id, action, g.user, prefix=prefix,
                                 reason=request.form.get("reason"), params=_params(request.form))
        return [message.id for message in event.outbox]

    try:
        outbox = commit_retrying(perform)  # a deadlock: the whole action again, as the API does
    except (Forbidden, NotFound):
        db.session.rollback()
        raise
    except AppError as exc:
        db.session.rollback()
        flash(f"操作未执行：{exc.message}（{exc.code}）", "error")
        return redirect(url_for("dashboard.case_page", incident_id=incident_id), 303)
    enqueue_outbox(outbox)
    flash(f"已{_label(action)}。", "ok")
    return redirect(url_for("dashboard.case_page", incident_id=incident_id), 303)


def _label(action: str) -> str:
    return ACTION_LABELS.get(action, action)


# --- sync review and dead letters --------------------------------------------------------------
def _review(resolve, item_id):
    reason = (request.form.get("reason") or "").strip()
    try:
        if not reason:
            raise ValidationFailed(fields={"reason": ["Required."]})
        resolve(item_id, reason)
        db.session.commit()
        flash("已处理。", "ok")
    except AppError as exc:
        db.session.rollback()
        if isinstance(exc, (Forbidden, NotFound)):
            raise
        flash(f"操作未执行：{exc.message}（{exc.code}）", "error")
    return redirect(url_for("dashboard.queues_page") + "#review", 303)


@bp.route("/quarantine/<int:item_id>", methods=["POST"])
@login_required("sync.review")
def resolve_quarantine(item_id):
    action = request.form.get("action", "")
    return _review(lambda i, reason: review.resolve_quarantine(i, scope_prefix(g.user), g.user, action, reason), item_id)


@bp.route("/conflicts/<int:conflict_id>", methods=["POST"])
@login_required("sync.review")
def resolve_conflict(conflict_id):
    action = request.form.get("action", "")
    return _review(lambda i, reason: review.resolve_conflict(i, scope_prefix(g.user), g.user, action, reason),
                   conflict_id)


@bp.route("/notifications/<int:notification_id>/retry", methods=["POST"])
@login_required("dispatch.manage")
def retry_notification(notification_id):
    retried = []

    def resolve(i, reason):
        retried.append(dispatching.retry_dead(i, scope_prefix(g.user), g.user, reason).id)

    response = _review(resolve, notification_id)
    for notification_id in retried:
        enqueue_delivery(notification_id)
    return response

