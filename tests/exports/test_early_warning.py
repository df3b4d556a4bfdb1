"""风险预警: a cell whose count this week is far above its own 8-week baseline is flagged; a steady one is not."""
from datetime import timedelta

from gridapp.extensions import db
from gridapp.models import utcnow
from gridapp.services.early_warning import warnings
from gridapp.services.filters import IncidentFilter
from tests.exports.helpers import build_export_world, new_incident


def _incidents(world, cell, category, ages_in_days):
    now = utcnow()
    for age in ages_in_days:
        incident = new_incident(world, cell=cell, category=category)
        incident.received_at = now - timedelta(days=age)


def test_spike_is_flagged_and_steady_cells_are_not(app, client):
    world = build_export_world(with_incidents=False)
    # Cell 0: about one a week for 8 weeks, then 9 this week. Cell 1: two a week throughout.
    _incidents(world, 0, "09006", [8 + 7 * w for w in range(8)] + [1] * 9)
    _incidents(world, 1, "06010", [d for w in range(9) for d in (7 * w + 2, 7 * w + 3)])
    db.session.commit()
    flagged = warnings(IncidentFilter(), "330521101", by="cell")
    assert [w["key"] for w in flagged] == [world["cells_a"][0].code]
    assert flagged[0]["recent_count"] == 9 and flagged[0]["baseline_weekly_mean"] == 1.0
    assert flagged[0]["score"] == 8.0  # (9 − 1) / sqrt(1)
    by_category = client.get("/api/v1/warnings?by=category", headers=world["headers"]["dispatcher"]).get_json()
    assert [(w["key"], w["category_name"]) for w in by_category] == [("09006", "占道经营")]
    quiet = client.get("/api/v1/warnings?category=06", headers=world["headers"]["dispatcher"]).get_json()
    assert quiet == []
    other = client.get("/api/v1/warnings", headers=world["headers"]["worker_b"])
    assert other.status_code == 403
    bad = client.get("/api/v1/warnings?by=village", headers=world["headers"]["dispatcher"])
    assert bad.status_code == 422


def test_the_dashboard_flags_the_same_cells_and_categories(app):
    from tests.dashboard.conftest import Browser

    world = build_export_world(with_incidents=False)
    _incidents(world, 0, "09006", [8 + 7 * w for w in range(8)] + [1] * 9)
    db.session.commit()
    browser = Browser(app)
    browser.login(world["users"]["dispatcher"])
    page = browser.get("/dashboard/").get_data(as_text=True)
    section = page[page.index('id="q-warnings"'):]
    section = section[:section.index("</section>")]
    assert f"网格 {world['cells_a'][0].code}" in section and "类别 占道经营（09006）" in section
    assert "<td>9</td><td>1.0</td><td>8.0</td>" in section
    live = browser.get("/dashboard/?partial=1").get_data(as_text=True)
    assert "q-warnings" not in live  # weekly figures: not recomputed on every live refresh
