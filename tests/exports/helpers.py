"""Incidents for export tests, and GDAL's ogrinfo: a client we did not write."""
import subprocess
import uuid

from gridapp.extensions import db
from gridapp.services import incidents
from tests.factories import CELL, ORIGIN_A, ORIGIN_B, make_user, token_for
from tests.workflow.helpers import build_world

PARTY = {"name": "张三丰", "phone": "13812345678", "id_number": "330521199003071234"}
FORMULA = "=HYPERLINK(\"http://evil\",\"点我\")"


def place(origin, cell):
    west, north = origin
    return {"lon": west + CELL * (cell % 3 + 0.5), "lat": north - CELL * (cell // 3 + 0.5), "crs": "wgs84"}


def new_incident(world, *, cell=0, category="06010", description="暴露垃圾", party=None, township="a"):
    reporter = world["users"]["reporter"] if township == "a" else world["users"]["worker_b"]
    incident = incidents.create_incident(
        incident_id=uuid.uuid4(), reporter=reporter, device=None, category_code=category, description=description,
        location=place(ORIGIN_A if township == "a" else ORIGIN_B, cell), gps_accuracy_m=None, created_at_device=None,
        clock_suspect=False, mutation_id=None, township_id=world[f"township_{township}"].id, party=party)
    return incident




def ogrinfo(*args: str) -> str:
    """Run GDAL's ogrinfo and return its output (fails the test on a non-zero exit)."""
    result = subprocess.run(["ogrinfo", "-ro", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def feature_count(summary: str) -> int:
    return int(summary.split("Feature Count: ", 1)[1].split()[0])


def build_export_world(with_incidents=True):
    """Every role, a worker in B, a county supervisor; six incidents in township A (one with a party, one
    with a formula description) and one in B."""
    world = build_world()
    world["users"]["worker_b"] = make_user("worker_b", "grid_worker", world["township_b"],
                                           cells=world["cells_b"][:1])
    world["users"]["county_supervisor"] = make_user("county_supervisor", "supervisor", world["county"])
    world["incidents"] = [] if not with_incidents else [
        new_incident(world, cell=0, party=PARTY, description="占道经营，当事人拒不整改"),
        new_incident(world, cell=0, description=FORMULA),
        new_incident(world, cell=1, category="09006", description="占道经营"),
        new_incident(world, cell=2),
        new_incident(world, cell=3, category="07001", description="非法小广告"),
        new_incident(world, cell=4),
        new_incident(world, cell=0, township="b", description="乙镇的事件"),
    ]
    db.session.commit()
    world["headers"] = {name: token_for(user) for name, user in world["users"].items()}
    return world
