"""Plain factory functions with keyword overrides. They flush, never commit (the test cleans up)."""
from geoalchemy2.shape import from_shape
from shapely.geometry import box

from geo.grid import square_cells
from geo.measure import geodesic_area_m2
from gridapp.extensions import db
from gridapp.models import GridCell
from gridapp.services.areas import ensure_area
from gridapp.services.auth import issue_token
from gridapp.services.squads import ensure_squad, ensure_team
from gridapp.services.users import assign_cells, create_user

PASSWORD = "test-pass-123"
COUNTY = "330521"
TOWNSHIP_A, TOWNSHIP_B = "330521101", "330521102"
VILLAGE_A, VILLAGE_B = TOWNSHIP_A + "001", TOWNSHIP_B + "001"
# Cells are 0.001° squares; township A's village starts at (120.0, 30.5), B's further east.
CELL = 0.001
ORIGIN_A, ORIGIN_B = (120.0, 30.5), (120.1, 30.5)


def make_cell(code, geom, village, township, name=None):
    cell = GridCell(code=code, name=name or f"网格{code[-3:]}", village=village, township=township,
                    geom=from_shape(geom, srid=4326), area_m2=geodesic_area_m2(geom))
    db.session.add(cell)
    db.session.flush()
    return cell


def make_world(cols=3, rows=2):
    """Create a county with two townships, one village each, a cols × rows block of cells per village,
    a team with one squad per township, and return the objects by name."""
    county = ensure_area(COUNTY, "测试县", "county")
    world = {"county": county}
    for key, township_code, village_code, (west, north) in (
        ("a", TOWNSHIP_A, VILLAGE_A, ORIGIN_A), ("b", TOWNSHIP_B, VILLAGE_B, ORIGIN_B)
    ):
        township = ensure_area(township_code, f"{key.upper()}镇", "township", county)
        village = ensure_area(village_code, f"{key.upper()}村", "village", township)
        cells = [make_cell(code, polygon, village, township)
                 for code, polygon in square_cells(west, north, CELL, CELL, cols, rows, village_code)]
        team = ensure_team(township, f"{key.upper()}镇综合行政执法队")
        squad = ensure_squad(team, "01", "一中队", [village])
        world.update({f"township_{key}": township, f"village_{key}": village, f"cells_{key}": cells,
                      f"squad_{key}": squad})
    return world


def make_user(username, role, area, squad=None, cells=None, **kwargs):
    user = create_user(username, role, area, PASSWORD, squad=squad, **kwargs)
    if cells:
        assign_cells(user, cells)
    return user


def token_for(user) -> dict:
    """Return Authorization headers with a fresh token for the user."""
    token, _ = issue_token(user.username, PASSWORD, 3600)
    db.session.commit()
    return {"Authorization": f"Bearer {token}"}


def township_box(key):
    west, north = ORIGIN_A if key == "a" else ORIGIN_B
    return box(west, north - 1, west + 1, north)
