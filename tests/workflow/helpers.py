"""A world with a case, every role, the catalogue and squads; a real local webhook receiver."""
import hashlib
import hmac
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from gridapp.extensions import db
from gridapp.models import ResponsibilityRule, Squad
from gridapp.services import incidents
from gridapp.services.categories import import_catalogue, parse_catalogue_csv
from gridapp.services.demo import DEFAULT_CATALOGUE
from gridapp.services.squads import ensure_squad
from gridapp.services.workflow import NEEDS_AFTER_PHOTO
from tests.factories import CELL, ORIGIN_A, make_user, make_world, token_for

SECRET = "squad-secret"


def build_world():
    world = make_world(cols=3, rows=2)
    import_catalogue(parse_catalogue_csv(DEFAULT_CATALOGUE.read_text(encoding="utf-8")))
    township = world["township_a"]
    world["squad2"] = ensure_squad(world["squad_a"].team, "02", "二中队", [])
    world["users"] = {
        "reporter": make_user("reporter", "grid_worker", township, cells=world["cells_a"][:1]),
        "neighbour": make_user("neighbour", "grid_worker", township, cells=world["cells_a"][1:]),
        "dispatcher": make_user("dispatcher", "dispatcher", township),
        "duty_chief": make_user("chief", "duty_chief", township),
        "squad_member": make_user("member", "squad_member", township, squad=world["squad_a"]),
        "squad_leader": make_user("leader", "squad_leader", township, squad=world["squad_a"]),
        "other_squad": make_user("other_member", "squad_member", township, squad=world["squad2"]),
        "supervisor": make_user("supervisor", "supervisor", township),
        "admin": make_user("admin", "admin", township),
    }
    db.session.commit()
    return world


def report(world, category="06010", cell=0, description="暴露垃圾"):
    west, north = ORIGIN_A
    col, row = cell % 3, cell // 3
    incident = incidents.create_incident(
        incident_id=uuid.uuid4(), reporter=world["users"]["reporter"], device=None, category_code=category,
        description=description, location={"lon": west + CELL * (col + 0.5), "lat": north - CELL * (row + 0.5),
                                           "crs": "wgs84"},
        gps_accuracy_m=None, created_at_device=None, clock_suspect=False, mutation_id=None,
        township_id=world["township_a"].id)
    db.session.commit()
    return incident.id


def photo_spec(photo_type="after_handling", content=None) -> dict:
    """A photo declared by hash, as a phone or a squad's app sends it (its bytes may follow later)."""
    content = content or uuid.uuid4().bytes
    return {"attachment_id": str(uuid.uuid4()), "sha256": hashlib.sha256(content).hexdigest(), "size": len(content),
            "type": photo_type}


def act(client, user, incident_id, action, reason=None, photos=None, **params):
    """Take a workflow action. Completing actions get an after-handling photo, as the workflow requires,
    unless the test passes its own `photos` (an empty list to go without)."""
    if photos is None:
        photos = [photo_spec()] if action in NEEDS_AFTER_PHOTO else []
    return client.post(f"/api/v1/incidents/{incident_id}/actions/{action}", headers=token_for(user),
                       json={"reason": reason, "params": params, "photos": photos})


def add_rule(world, squad, *, category=None, area=None, cell_code=None, priority=100, fallback=False, auto=False):
    rule = ResponsibilityRule(category_id=category.id if category else None, area_id=area.id if area else None,
                              cell_code=cell_code, squad_id=squad.id, priority=priority, is_fallback=fallback,
                              auto_dispatch=auto)
    db.session.add(rule)
    db.session.commit()
    return rule


class WebhookReceiver:
    """A real HTTP server on loopback that records deliveries and can be told to fail or hang."""

    def __init__(self):
        self.received, self.failures_left, self.delay, self.in_flight = [], 0, 0.0, 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.in_flight += 1
                if receiver.delay:
                    threading.Event().wait(receiver.delay)
                if receiver.failures_left > 0:
                    receiver.failures_left -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.received.append({"headers": dict(self.headers), "body": json.loads(body), "raw": body})
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def keys(self):
        return [r["headers"]["Idempotency-Key"] for r in self.received]

    def signature_ok(self, record) -> bool:
        expected = "sha256=" + hmac.new(SECRET.encode(), record["raw"], hashlib.sha256).hexdigest()
        return hmac.compare_digest(record["headers"]["X-Gridapp-Signature"], expected)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def point_squad_at(squad: Squad, receiver: WebhookReceiver):
    squad.webhook_url, squad.webhook_secret = receiver.url, SECRET
    db.session.commit()
