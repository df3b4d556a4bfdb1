"""The dashboard through a session: sign-in, CSRF, permissions and area scope, queues, the case page
and its actions, live-update ETags and dead-letter retry. The browser tests are in test_browser.py."""
import uuid

from sqlalchemy import select

from gridapp.extensions import db
from gridapp.models import Incident, IncidentEvent, Notification, QuarantineItem
from gridapp.services import incidents
from gridapp.services.access import PERMISSIONS
from tests.dashboard.conftest import Browser
from tests.factories import CELL, ORIGIN_B, make_user
from tests.sync.phones import phone
from tests.workflow.helpers import report

# Reachable without a session: the sign-in pages and the static files.
OPEN_ENDPOINTS = {"dashboard.login", "dashboard.logout", "dashboard.vendor", "dashboard.static"}


def status(incident_id):
    db.session.expire_all()
    return db.session.get(Incident, incident_id).status


def test_sign_in_gives_a_secure_http_only_session(browser, world):
    response = browser.login(world["users"]["dispatcher"])
    assert response.status_code == 302 and response.headers["Location"].endswith("/dashboard/")
    cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = browser.get("/dashboard/")
    assert page.status_code == 200 and "工作队列" in page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"


def test_wrong_password_and_grid_workers_are_refused(browser, world):
    assert browser.login(world["users"]["dispatcher"], password="wrong-password").status_code == 401
    response = browser.login(world["users"]["reporter"])
    assert response.status_code == 403 and "网格员请使用手机App" in response.get_data(as_text=True)
    assert browser.get("/dashboard/").status_code == 302  # no session was started


def test_a_post_without_this_sessions_csrf_token_is_refused(browser, world):
    browser.get("/dashboard/login")
    response = browser.post("/dashboard/login", {"username": "dispatcher", "password": "x"}, csrf=False)
    assert response.status_code == 403 and response.get_json()["code"] == "dashboard.csrf_failed"
    browser.login(world["users"]["dispatcher"])
    case = report(world)
    for data in ({}, {"csrf_token": "forged"}):
        response = browser.client.post(f"/dashboard/incidents/{case}/actions/register", data=data,
                                       base_url="https://localhost")
        assert response.status_code == 403 and response.get_json()["code"] == "dashboard.csrf_failed"
    assert status(case) == "reported"


def test_every_view_declares_a_permission_and_needs_a_session(app, browser, world):
    case = report(world)
    views = [r for r in app.url_map.iter_rules() if r.endpoint.startswith("dashboard.")
             and r.endpoint not in OPEN_ENDPOINTS]
    assert len(views) >= 12
    for rule in views:
        assert getattr(app.view_functions[rule.endpoint], "required_permission", None) in PERMISSIONS, rule.endpoint
        path = (rule.rule.replace("<uuid:incident_id>", str(case)).replace("<int:z>/<int:x>/<int:y>", "1/1/1")
                .replace("<int:item_id>", "1").replace("<int:conflict_id>", "1").replace("<int:notification_id>", "1")
                .replace("<action>", "register").replace("<code>", "330521101001001001"))
        if "GET" in rule.methods:
            response = browser.get(path)
            assert response.status_code == 302 and "/dashboard/login" in response.headers["Location"], path
    assert status(case) == "reported"


def test_the_new_reports_queue_shows_the_likely_duplicate_beside_it(browser, world):
    first = report(world, description="垃圾堆在路口")
    second = report(world, description="路口又有垃圾")
    assert db.session.get(Incident, second).likely_duplicate_of == first
    browser.login(world["users"]["dispatcher"])
    html = browser.get("/dashboard/").get_data(as_text=True)
    row = html.split(f'data-incident="{second}"')[1].split("</tr>")[0]
    assert db.session.get(Incident, first).case_number in row and "垃圾堆在路口" in row


def _action_forms(html: str) -> set[str]:
    return {part.split('"')[0] for part in html.split('data-action="')[1:]}


def test_the_case_page_offers_exactly_the_actions_the_user_may_take(app, world):
    case = report(world)
    dispatcher, supervisor = Browser(app), Browser(app)
    dispatcher.login(world["users"]["dispatcher"])
    supervisor.login(world["users"]["supervisor"])
    html = dispatcher.get(f"/dashboard/incidents/{case}").get_data(as_text=True)
    assert _action_forms(html) == {"request_verification", "register", "reject", "merge"}
    # reject needs a reason: the form says so and requires it
    reject = html.split('data-action="reject"')[1].split("</form>")[0]
    assert "理由（必填）" in reject and "required" in reject.split("<textarea")[1]
    assert _action_forms(supervisor.get(f"/dashboard/incidents/{case}").get_data(as_text=True)) == set()
    assert supervisor.post(f"/dashboard/incidents/{case}/actions/register").status_code == 403


def test_actions_from_the_case_page_run_the_workflow_and_refusals_change_nothing(browser, world):
    case = report(world)
    browser.login(world["users"]["dispatcher"])
    page = f"/dashboard/incidents/{case}"
    browser.get(page)
    response = browser.post(f"{page}/actions/reject", {"reason": "  "})
    assert response.status_code == 303 and status(case) == "reported"
    assert "workflow.reason_required" in browser.get(page).get_data(as_text=True)
    assert browser.post(f"{page}/actions/register", {"condition_seq": "1"}).status_code == 303
    assert status(case) == "registered"
    browser.get(page)
    assert browser.post(f"{page}/actions/dispatch", {"squad_code": "99"}).status_code == 303
    assert status(case) == "registered" and "workflow.invalid_input" in browser.get(page).get_data(as_text=True)
    assert browser.post(f"{page}/actions/dispatch", {"squad_code": "01", "reason": "按清单派遣"}).status_code == 303
    assert status(case) == "dispatched"
    html = browser.get(page).get_data(as_text=True)
    assert "已派遣" in html and "按清单派遣" in html and 'class="countdown"' in html
    actions = db.session.scalars(select(IncidentEvent.action).where(IncidentEvent.incident_id == case)
                                 .order_by(IncidentEvent.id)).all()
    assert actions == ["incident.register", "incident.dispatch"]


def test_cases_of_another_township_are_not_found(browser, world):
    other = make_user("b_worker", "grid_worker", world["township_b"], cells=world["cells_b"][:1])
    db.session.commit()
    case = report_at(other, world["township_b"], ORIGIN_B)
    browser.login(world["users"]["dispatcher"])
    assert browser.get(f"/dashboard/incidents/{case}").status_code == 404
    browser.get("/dashboard/")
    assert browser.post(f"/dashboard/incidents/{case}/actions/register").status_code == 404
    assert status(case) == "reported"
    assert browser.get(f"/dashboard/incidents/{uuid.uuid4()}").status_code == 404


def report_at(reporter, township, origin):
    """A report in the first cell of the block that starts at `origin`."""
    incident = incidents.create_incident(
        incident_id=uuid.uuid4(), reporter=reporter, device=None, category_code="06010", description="暴露垃圾",
        location={"lon": origin[0] + CELL / 2, "lat": origin[1] - CELL / 2, "crs": "wgs84"}, gps_accuracy_m=None,
        created_at_device=None, clock_suspect=False, mutation_id=None, township_id=township.id)
    db.session.commit()
    return incident.id


def test_live_answers_304_until_something_changes(browser, world):
    browser.login(world["users"]["dispatcher"])
    first = browser.get("/dashboard/live")
    etag = first.get_json()["etag"]
    assert first.headers["ETag"] == f'"{etag}"'
    assert browser.get("/dashboard/live", headers={"If-None-Match": f'"{etag}"'}).status_code == 304
    report(world)
    changed = browser.get("/dashboard/live", headers={"If-None-Match": f'"{etag}"'})
    assert changed.status_code == 200 and changed.get_json()["etag"] != etag
    partial = browser.get("/dashboard/?partial=1").get_data(as_text=True)
    assert "data-incident" in partial and "<html" not in partial


def test_a_dead_letter_is_retried_from_the_queue_with_a_reason(browser, world):
    case = report(world)
    dead = Notification(idempotency_key=f"dispatch:{case}:1", squad_id=world["squad_a"].id, incident_id=case,
                        kind="incident.dispatched", body={}, state="dead", attempts=5, last_error="timeout")
    db.session.add(dead)
    db.session.commit()
    browser.login(world["users"]["dispatcher"])
    html = browser.get("/dashboard/").get_data(as_text=True)
    assert "发送失败的通知" in html and "timeout" in html
    browser.post(f"/dashboard/notifications/{dead.id}/retry", {"reason": ""})
    db.session.expire_all()
    assert db.session.get(Notification, dead.id).state == "dead"
    assert browser.post(f"/dashboard/notifications/{dead.id}/retry", {"reason": "中队网络已恢复"}).status_code == 303
    db.session.expire_all()
    assert db.session.get(Notification, dead.id).state == "pending"
    squad_member = world["users"]["squad_member"]
    browser.login(squad_member)
    assert "发送失败的通知" not in browser.get("/dashboard/").get_data(as_text=True)
    assert browser.post(f"/dashboard/notifications/{dead.id}/retry", {"reason": "x"}).status_code == 403


def test_a_quarantined_sync_item_is_resolved_from_the_queue_with_a_reason(app, browser, world, tmp_path):
    client = phone(app, tmp_path, world["users"]["reporter"])
    client.report("06010", "越界上报", ORIGIN_B[0] + CELL / 2, ORIGIN_B[1] - CELL / 2)  # outside their cells
    assert client.push() == {"quarantined": 1}
    item = db.session.scalar(select(QuarantineItem))
    browser.login(world["users"]["dispatcher"])
    html = browser.get("/dashboard/").get_data(as_text=True)
    section = html.split('id="review"')[1].split("</section>")[0]
    assert '<span class="count">1</span>' in section and "越界上报" in section
    browser.post(f"/dashboard/quarantine/{item.id}", {"action": "discard", "reason": ""})
    db.session.expire_all()
    assert db.session.get(QuarantineItem, item.id).state == "open"
    assert browser.post(f"/dashboard/quarantine/{item.id}", {"action": "discard", "reason": "越界，已电话核实"}).status_code == 303
    db.session.expire_all()
    assert db.session.get(QuarantineItem, item.id).state == "discarded"
    browser.login(world["users"]["squad_member"])
    assert "同步隔离项" not in browser.get("/dashboard/").get_data(as_text=True)
    assert browser.post(f"/dashboard/quarantine/{item.id}", {"action": "apply", "reason": "x"}).status_code == 403


def test_the_case_page_shows_derived_photos_only_and_scoped(app, browser, world):
    """Thumbnails and display images (EXIF-free) through the session; originals and other townships: 404."""
    import hashlib
    import io

    from PIL import Image

    from gridapp.services import photos
    from tests.photos.images import has_gps, jpeg

    case = report(world)
    data = jpeg(width=64, height=48, size=50_000, orientation=6)
    digest = hashlib.sha256(data).hexdigest()
    incident = db.session.get(Incident, case)
    reporter = world["users"]["reporter"]
    photos.declare_photo(incident, {"attachment_id": str(uuid.uuid4()), "sha256": digest, "size": len(data),
                                    "type": "report"}, user=reporter)
    pending = {"attachment_id": str(uuid.uuid4()), "sha256": hashlib.sha256(b"later").hexdigest(), "size": 5,
               "type": "before_handling"}
    photos.declare_photo(incident, pending, user=reporter)
    upload, _ = photos.create_upload(reporter, f"user:{reporter.id}", digest, len(data))
    assert photos.append_chunk(upload.id, f"user:{reporter.id}", 0, io.BytesIO(data), len(data), None) == (
        len(data), digest)  # the last chunk verifies and binds the blob
    db.session.commit()
    photos.derive(digest)
    db.session.commit()

    browser.login(world["users"]["dispatcher"])
    page = browser.get(f"/dashboard/incidents/{case}").get_data(as_text=True)
    thumbnail, display = f"/dashboard/photos/{digest}/thumbnail", f"/dashboard/photos/{digest}/display"
    assert thumbnail in page and display in page and "/original" not in page
    assert "处置前 · reporter（待上传）" in page  # declared, bytes not here yet
    for url in (thumbnail, display):
        response = browser.get(url)
        assert response.status_code == 200 and response.mimetype == "image/jpeg" and response.headers["ETag"]
        assert not has_gps(response.data) and b"Exif" not in response.data
        with Image.open(io.BytesIO(response.data)) as image:
            assert not image.getexif()
    assert browser.get(f"/dashboard/photos/{digest}/original").status_code == 404  # evidence stays with the API
    other = Browser(app)
    outsider = make_user("b_dispatcher", "dispatcher", world["township_b"])
    db.session.commit()
    other.login(outsider)
    assert other.get(thumbnail).status_code == 404
    assert Browser(app).get(thumbnail).status_code == 302  # no session: to the sign-in page
