"""Demo data: a county near 德清 (Zhejiang) with two townships, 320 cells, users of every role,
squads, the default catalogue and a few dozen cases at every stage of the workflow. Idempotent:
loading it twice leaves the same data.

Names and codes are plausible, not official; see docs/demo-data.md.
"""
import hashlib
import random
import uuid
import zlib
from pathlib import Path

from geoalchemy2.shape import to_shape
from sqlalchemy import select

from geo.grid import square_cells
from geo.io import Feature, FeatureSource
from gridapp.extensions import db
from gridapp.models import GridCell, Incident, User
from gridapp.services import workflow
from gridapp.services.areas import ensure_area
from gridapp.services.categories import import_catalogue, parse_catalogue_csv
from gridapp.services.grids import import_cells
from gridapp.services.incidents import create_incident
from gridapp.services.responsibility import import_rules
from gridapp.services.squads import ensure_squad, ensure_team
from gridapp.services.users import assign_cells, create_user

DEFAULT_CATALOGUE = Path(__file__).resolve().parent.parent / "data" / "categories-gbt47678.5-2026.csv"
DEMO_PASSWORD = "demo-pass-2026"
COUNTY = ("330521", "德清县")
# Cells of about 200 m × 200 m at latitude 30.5°; each village is 8 × 5 cells, four villages a township.
CELL_W, CELL_H, VILLAGE_COLS, VILLAGE_ROWS = 0.00208, 0.0018, 8, 5
TOWNSHIPS = [
    # code, name, prefix for usernames, north-west corner (lon, lat), villages (code suffix, name)
    ("330521101", "乾元镇", "qy", (120.060, 30.560),
     [("001", "城北社区"), ("002", "城南社区"), ("201", "金火村"), ("202", "联合村")]),
    ("330521102", "新市镇", "xs", (120.280, 30.630),
     [("001", "新市社区"), ("002", "西河社区"), ("201", "梅林村"), ("202", "蔡界村")]),
]


def load_demo() -> dict:
    """Create or refresh the demo data; return counts of what is there."""
    county = ensure_area(*COUNTY, level="county")
    import_catalogue(parse_catalogue_csv(DEFAULT_CATALOGUE.read_text(encoding="utf-8")))
    _ensure_user("admin", "admin", county, "县级管理员")
    _ensure_user("county_supervisor", "supervisor", county, "县督查员")
    for code, name, prefix, corner, villages in TOWNSHIPS:
        _load_township(county, code, name, prefix, corner, villages)
    for code, _name, prefix, _corner, villages in TOWNSHIPS:
        _load_cases(code, prefix, [suffix for suffix, _village_name in villages])
    return {
        "cells": db.session.scalar(select(db.func.count()).select_from(GridCell).where(GridCell.valid_to.is_(None))),
        "users": db.session.scalar(select(db.func.count()).select_from(User)),
        "incidents": db.session.scalar(select(db.func.count()).select_from(Incident)),
    }


def _load_township(county, code, name, prefix, corner, villages):
    township = ensure_area(code, name, level="township", parent=county)
    west, north = corner
    features, village_areas = [], []
    for index, (suffix, village_name) in enumerate(villages):
        village = ensure_area(code + suffix, village_name, level="village", parent=township)
        village_areas.append(village)
        # Villages in a 2 × 2 block; edges computed from integer offsets so neighbours share vertices.
        v_west = west + (index % 2) * VILLAGE_COLS * CELL_W
        v_north = north - (index // 2) * VILLAGE_ROWS * CELL_H
        for cell_code, polygon in square_cells(v_west, v_north, CELL_W, CELL_H, VILLAGE_COLS, VILLAGE_ROWS, village.code):
            features.append(Feature(properties={"code": cell_code, "name": f"{village_name}{cell_code[-3:]}号网格"},
                                    geom=polygon))
    source = FeatureSource(features=features, source_crs="EPSG:4326", driver="demo", layer="demo")
    import_cells(source, township, filename="demo", imported_by="demo")

    team = ensure_team(township, f"{name}综合行政执法队")
    squads = [ensure_squad(team, "01", "一中队", village_areas[:2]), ensure_squad(team, "02", "二中队", village_areas[2:])]
    # A small responsibility list: garbage goes to 一中队 at once, street vending to 二中队 after a
    # dispatcher confirms, and 二中队 takes whatever else happens in the township (属地兜底).
    import_rules(township, [
        {"category_code": "06010", "place_code": code, "squad_code": "01", "priority": "10", "auto_dispatch": "是",
         "note": "暴露垃圾由一中队自动派遣"},
        {"category_code": "09006", "place_code": code, "squad_code": "02", "priority": "10", "note": "占道经营"},
        {"category_code": "", "place_code": code, "squad_code": "02", "fallback": "是", "note": "属地兜底"},
    ])
    for role, title in (("dispatcher", "派遣员"), ("duty_chief", "值班长"), ("supervisor", "督查员"), ("admin", "管理员")):
        _ensure_user(f"{prefix}_{role}", role, township, f"{name}{title}")
    for number, squad in enumerate(squads, start=1):
        _ensure_user(f"{prefix}_squad{number}_leader", "squad_leader", township, f"{name}{squad.name}中队长", squad)
        _ensure_user(f"{prefix}_squad{number}_member", "squad_member", township, f"{name}{squad.name}队员", squad)
    for number, village in enumerate(village_areas, start=1):
        worker = _ensure_user(f"{prefix}_worker{number}", "grid_worker", township, f"{village.name}网格员")
        assign_cells(worker, list(db.session.scalars(
            select(GridCell).where(GridCell.village_id == village.id, GridCell.valid_to.is_(None)).order_by(GridCell.code)
        )))


def _ensure_user(username, role, area, display_name, squad=None) -> User:
    user = db.session.scalar(select(User).where(User.username == username))
    if user is None:
        return create_user(username, role, area, DEMO_PASSWORD, display_name=display_name, squad=squad,
                           phone=f"1380000{zlib.crc32(username.encode()) % 10000:04d}")
    user.role, user.area, user.squad, user.display_name, user.is_active = role, area, squad, display_name, True
    return user


# --- cases --------------------------------------------------------------------------------------------
CASES_PER_TOWNSHIP = 36
SCENES = [("06010", "路边暴露垃圾，已堆放两天"), ("09006", "流动摊贩占道经营，影响通行"),
          ("06036", "楼道口乱堆杂物"), ("06028", "夜间施工噪声扰民"), ("06013", "人行道地砖破损"),
          ("06007", "沿街晾挂衣物")]
# Where each case is left, cycling: the queues, the map and the evaluation all have something to show.
STAGES = ["reported", "reported", "registered", "dispatched", "handling", "handling", "checking", "closed",
          "closed"]
STEPS = ["register", "dispatch", "accept", "submit_result", "request_check", "pass_check"]
STEPS_FOR = {"reported": 0, "registered": 1, "dispatched": 2, "handling": 3, "checking": 5, "closed": 6}
DEMO_NAMESPACE = uuid.UUID("6f1c2a52-7d0e-4c55-9a57-5d1f0c0de001")


def _load_cases(township_code: str, prefix: str, village_suffixes: list[str]) -> None:
    """Cases reported by the township's grid workers and taken through the workflow by its staff, each
    left at a stage. A case already there is left alone (ids are derived from the township and number)."""
    rng = random.Random(township_code)
    users = {u.username: u for u in db.session.scalars(select(User).where(User.username.startswith(prefix + "_")))}
    cells = db.session.scalars(select(GridCell).where(GridCell.code.startswith(township_code),
                                                      GridCell.valid_to.is_(None)).order_by(GridCell.code)).all()
    for number in range(CASES_PER_TOWNSHIP):
        cell, jitter = rng.choice(cells), (rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3))
        incident_id = uuid.uuid5(DEMO_NAMESPACE, f"{township_code}/{number}")
        if db.session.get(Incident, incident_id) is not None:
            continue
        village_index = village_suffixes.index(cell.code[9:12])  # worker N has the N-th village
        worker = users[f"{prefix}_worker{village_index + 1}"]
        centre = to_shape(cell.geom).centroid
        category, description = SCENES[number % len(SCENES)]
        party = {"name": "王建国", "phone": f"139{number:08d}", "id_number": f"{township_code[:6]}19800101{number:04d}"} \
            if category == "09006" else None
        create_incident(
            incident_id=incident_id, reporter=worker, device=None, category_code=category, description=description,
            location={"lon": centre.x + jitter[0] * CELL_W, "lat": centre.y + jitter[1] * CELL_H, "crs": "wgs84"},
            gps_accuracy_m=5.0, created_at_device=None, clock_suspect=False, mutation_id=None,
            township_id=cell.township_id, party=party)
        squad_number = 1 if village_index < 2 else 2  # 一中队 the communities, 二中队 the villages
        actors = {"register": users[f"{prefix}_dispatcher"], "dispatch": users[f"{prefix}_dispatcher"],
                  "accept": users[f"{prefix}_squad{squad_number}_member"],
                  "submit_result": users[f"{prefix}_squad{squad_number}_member"], "request_check": None,
                  "pass_check": worker}
        for step in STEPS[:STEPS_FOR[STAGES[number % len(STAGES)]]]:
            workflow.perform(incident_id, step, actors[step], prefix="",
                             **_step_input(step, squad_number, f"{township_code}/{number}"))
        db.session.commit()


def _step_input(step: str, squad_number: int, case_key: str) -> dict:
    if step == "dispatch":
        return {"params": {"squad_code": f"0{squad_number}"}}
    if step == "submit_result":
        # The after-handling photo is declared (its bytes would follow from the squad's app).
        content = f"demo after photo {case_key}".encode()
        return {"reason": "已现场处置完毕", "photos": [{
            "attachment_id": str(uuid.uuid5(DEMO_NAMESPACE, f"photo/{case_key}")),
            "sha256": hashlib.sha256(content).hexdigest(),
            "size": len(content), "type": "after_handling"}]}
    if step == "pass_check":
        return {"reason": "现场已恢复"}
    return {}
