"""End to end in headless Chromium (Debian's package, driven by Playwright; no browser download) against
the app started here with gunicorn, a real RQ worker, PostGIS and Redis: a report synced by the reference
phone client appears live, is registered and dispatched from the dashboard, reaches the squad's webhook,
is accepted and completed by the squad and checked by the grid worker through the API, and shows closed.
Screenshots of the queues, the map and the case page go to test-artifacts/screenshots/."""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from gridapp.extensions import db
from gridapp.models import Incident
from sync.client import HttpTransport, PhoneClient
from tests.factories import ORIGIN_A, PASSWORD, token_for
from tests.photos.images import jpeg
from tests.workflow.helpers import add_rule, photo_spec

ROOT = Path(__file__).resolve().parent.parent.parent
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
WAIT_MS = 20_000  # the longest any condition may take (a job, a poll, a restart)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is installed by scripts/setup.sh")]


def free_port() -> int:
    for port in range(5206, 5300):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 5206-5299")


def wait_until(condition, what: str, timeout: float = WAIT_MS / 1000):
    """Poll a condition (a job's effect in the database, a webhook arriving) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Server:
    """gunicorn and an RQ worker on the test database and Redis, as `make run` starts them."""

    def __init__(self, app, port: int, log_dir: Path):
        self.port, self.log_dir = port, log_dir
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "GRIDAPP_SQLALCHEMY_DATABASE_URI": app.config["SQLALCHEMY_DATABASE_URI"],
                    "GRIDAPP_REDIS_URL": app.config["REDIS_URL"], "GRIDAPP_SECRET_KEY": "e2e-secret",
                    "GRIDAPP_ARGON2_TIME_COST": "1", "GRIDAPP_ARGON2_MEMORY_KIB": "1024",
                    "GRIDAPP_DASHBOARD_POLL_SECONDS": "1", "FLASK_APP": "wsgi.py",
                    "GRIDAPP_PHOTO_STORAGE_DIR": str(log_dir / "photos")}
        self.web = self.worker = None

    def _spawn(self, name, args):
        with open(self.log_dir / f"{name}.log", "ab") as log:  # the child keeps its own copy of the handle
            return subprocess.Popen(args, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def start_web(self):
        self.web = self._spawn("web", [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{self.port}",
                                       "--worker-class", "gthread", "--workers", "1", "--threads", "8", "wsgi:app"])
        wait_until(self._answers, "the web server")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            assert self.web.poll() is None, (self.log_dir / "web.log").read_text()[-3000:]
            return False

    def stop_web(self):
        self.web.send_signal(signal.SIGTERM)
        self.web.wait(timeout=30)

    def start_worker(self):
        self.worker = self._spawn("worker", [sys.executable, "-m", "flask", "worker"])

    def stop(self):
        for process in (self.web, self.worker):
            if process and process.poll() is None:
                process.terminate()
                process.wait(timeout=30)


@pytest.fixture
def server(app, world, tmp_path):
    server = Server(app, free_port(), tmp_path)
    db.session.commit()  # nothing of this process holds a lock the server could wait on
    server.start_worker()
    server.start_web()
    yield server
    server.stop()


@contextmanager
def chromium_page(errors: list):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN",
                                      timezone_id="Asia/Shanghai")
        context.set_default_timeout(WAIT_MS)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            yield page
        finally:
            browser.close()


def log_in(page, base_url, user):
    page.goto(f"{base_url}/dashboard/login")
    page.get_by_label("用户名").fill(user.username)
    page.get_by_label("密码").fill(PASSWORD)
    page.get_by_role("button", name="登录").click()


def api_act(server, user, incident_id, action, reason=None, photos=()):
    """A squad member's or grid worker's action through the API, as their apps would send it."""
    import json
    import urllib.request

    request = urllib.request.Request(
        f"{server.url}/api/v1/incidents/{incident_id}/actions/{action}", method="POST",
        data=json.dumps({"reason": reason, "params": {}, "photos": list(photos)}).encode(),
        headers={"Content-Type": "application/json", **token_for(user)})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200, action


def status_of(incident_id) -> str:
    db.session.expire_all()
    status = db.session.get(Incident, incident_id).status
    db.session.rollback()
    return status


def test_a_report_from_a_phone_to_closed_through_the_dashboard(app, world, server, receiver, tmp_path):
    from playwright.sync_api import expect

    users = world["users"]
    add_rule(world, world["squad_a"], area=world["township_a"])  # routed to 一中队, dispatched by hand
    db.session.commit()
    if SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)
    SCREENSHOTS.mkdir(parents=True)
    errors = []
    with chromium_page(errors) as page:
        # A grid worker is refused, with a message, and gets no session.
        log_in(page, server.url, users["reporter"])
        expect(page.get_by_role("alert")).to_contain_text("网格员请使用手机App")
        page.goto(f"{server.url}/dashboard/")
        expect(page).to_have_url(re.compile(r".*/dashboard/login\?next=.*"))

        log_in(page, server.url, users["dispatcher"])
        expect(page.get_by_role("heading", name="工作队列", level=1)).to_be_visible()
        expect(page.locator("#q-new .count")).to_have_text("0")

        # The page survives a server restart, then shows a phone's report without a reload.
        server.stop_web()
        expect(page.locator("#live-status")).to_have_text("连接中断，正在重试…")
        server.start_web()
        transport = HttpTransport(server.url)
        phone = PhoneClient(transport, str(tmp_path / "phone.sqlite"))
        phone.register(users["reporter"].username, PASSWORD)
        west, north = ORIGIN_A
        photo = tmp_path / "IMG_0001.jpg"
        photo.write_bytes(jpeg(width=320, height=240))
        incident_id = phone.report("06010", "路口暴露垃圾", west + 0.0005, north - 0.0005, photos=[str(photo)])
        phone.sync()  # the report, then its photo (tus), then a pull
        transport.connection.close()
        case_number = phone.results()[next(iter(phone.results()))]["case_number"]
        row = page.locator(f'#q-new tr[data-incident="{incident_id}"]')
        expect(row).to_contain_text(case_number)
        expect(page.locator("#live-status")).to_have_text("")
        page.screenshot(path=str(SCREENSHOTS / "queues.png"))

        # Register it from the case page; routing (an RQ job) fills the dispatch form's squad.
        row.get_by_role("link", name=case_number).click()
        expect(page.locator("#case-status")).to_have_text("新上报")
        page.locator('form[data-action="register"]').get_by_role("button", name="立案").click()
        expect(page.locator("#case-status")).to_have_text("已立案")
        expect(page.locator(".history")).to_contain_text("自动分拨")  # the routing job ran, the page refreshed
        dispatch = page.locator('form[data-action="dispatch"]')
        expect(dispatch.get_by_label("派往中队")).to_have_value("01")
        dispatch.get_by_label("说明（可选）").fill("请尽快处置")
        dispatch.get_by_role("button", name="派遣").click()
        expect(page.locator("#case-status")).to_have_text("已派遣")
        expect(page.locator(".facts .countdown")).to_contain_text("剩余")

        # A form post without the CSRF token is refused, with the session cookie and all.
        forged = page.request.post(f"{server.url}/dashboard/incidents/{incident_id}/actions/return",
                                   form={"reason": "forged"})
        assert forged.status == 403 and forged.json()["code"] == "dashboard.csrf_failed"

        # The squad's webhook receives it (the notify job), signed.
        wait_until(lambda: len(receiver.received) == 1, "the squad's webhook")
        assert receiver.received[0]["body"]["case_number"] == case_number and receiver.signature_ok(receiver.received[0])

        # The squad accepts and completes it, the grid worker checks it: through the API, seen live.
        api_act(server, users["squad_member"], incident_id, "accept")
        expect(page.locator("#case-status")).to_have_text("处置中")
        # The result needs an after-handling photo: declared with the action, its bytes may follow later.
        api_act(server, users["squad_member"], incident_id, "submit_result", "已清理完毕",
                photos=[photo_spec("after_handling")])
        wait_until(lambda: status_of(incident_id) == "checking", "the check task (request_check job)")
        api_act(server, users["reporter"], incident_id, "pass_check", "现场已清理")
        expect(page.locator("#case-status")).to_have_text("已结案")
        expect(page.locator(".history")).to_contain_text("核查通过（结案）")
        expect(page.locator('form[data-action]')).to_have_count(0)
        expect(page.locator("#case-map[data-ready='1']")).to_be_visible()
        # The reporter's photo as an EXIF-free thumbnail (made by the derive job); the after photo is awaited.
        page.reload()
        thumbnail = page.locator(".photo-list img").first
        expect(thumbnail).to_have_attribute("src", re.compile(r"/dashboard/photos/[0-9a-f]{64}/thumbnail$"))
        assert page.evaluate("img => img.complete && img.naturalWidth", thumbnail.element_handle()) > 0
        expect(page.locator(".photos")).to_contain_text("处置后")
        page.screenshot(path=str(SCREENSHOTS / "case.png"), full_page=True)

        # The map: cells, village labels and the closed case when closed cases are shown.
        page.get_by_role("link", name="地图").click()
        expect(page.locator("#map[data-ready='1']")).to_be_visible()
        page.get_by_label("已结案").check()
        page.get_by_role("button", name="筛选").click()
        expect(page.locator("#map .leaflet-tile-container svg path, #map .leaflet-tile svg path").first).to_be_attached()
        expect(page.locator(".village-label").first).to_be_visible()
        page.locator("#map path.leaflet-interactive").first.click()
        expect(page.locator("#cell-panel h2")).to_contain_text("网格")
        page.screenshot(path=str(SCREENSHOTS / "map.png"))
        # The same panel from the keyboard, through the cell list beside the map.
        cell = world["cells_a"][0]
        page.get_by_label("查看网格", exact=True).focus()
        page.get_by_label("查看网格", exact=True).select_option(cell.code)
        expect(page.locator("#cell-panel")).to_contain_text(cell.code)
        expect(page.locator("#cell-panel")).to_contain_text(users["reporter"].display_name)
    assert errors == []
    assert status_of(incident_id) == "closed"
    assert len(receiver.received) == 1
