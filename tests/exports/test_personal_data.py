"""Personal data: masked in every listing, unmasked only with the permission and a reason, and logged
in an access log the database keeps append-only."""
import uuid

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from gridapp.extensions import db
from gridapp.models import Incident, PersonalDataAccess
from gridapp.services.masking import mask_id_number, mask_name, mask_phone
from tests.exports.helpers import PARTY
from tests.sync.phones import phone


def test_mask_functions():
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("057188001234") == "057*****1234"
    assert mask_phone("110") == "*10" and mask_phone(None) is None
    assert mask_id_number("330521199003071234") == "330521********1234"
    assert mask_id_number("33052119900307123X") == "330521********123X"
    assert mask_id_number("330521900307123") == "330521*****7123"
    assert mask_name("张三丰") == "张**" and mask_name("李") == "李*"


def _log_count():
    return db.session.scalar(select(func.count()).select_from(PersonalDataAccess))


def test_incident_api_listing_and_detail_are_masked(client, data):
    headers = data["headers"]["supervisor"]
    listed = client.get("/api/v1/incidents", headers=headers).get_json()
    party = [i for i in listed if i["party_phone"]]
    assert [(i["party_name"], i["party_phone"], i["party_id_number"]) for i in party] == [
        ("张**", "138****5678", "330521********1234")]
    detail = client.get(f"/api/v1/incidents/{party[0]['id']}", headers=headers)
    assert PARTY["phone"] not in detail.get_data(as_text=True)
    assert PARTY["id_number"] not in detail.get_data(as_text=True)


def test_the_dashboard_case_page_shows_the_party_masked(app, data):
    from tests.dashboard.conftest import Browser

    incident = db.session.scalar(select(Incident).where(Incident.party_phone.is_not(None)))
    browser = Browser(app)
    browser.login(data["users"]["supervisor"])
    page = browser.get(f"/dashboard/incidents/{incident.id}").get_data(as_text=True)
    assert "张** · 电话 138****5678 · 证件号 330521********1234" in page
    assert PARTY["phone"] not in page and PARTY["id_number"] not in page and PARTY["name"] not in page


def test_unmasked_export_needs_the_permission(client, data):
    for role in ("dispatcher", "duty_chief"):
        response = client.get("/api/v1/exports/incidents.csv?unmasked=true&reason=because",
                              headers=data["headers"][role])
        assert response.status_code == 403 and response.get_json()["code"] == "auth.forbidden"
    assert _log_count() == 0


def test_unmasked_export_needs_a_reason(client, data):
    for query in ("unmasked=true", "unmasked=true&reason=%20%20"):
        response = client.get(f"/api/v1/exports/incidents.geojson?{query}", headers=data["headers"]["supervisor"])
        assert response.status_code == 422 and response.get_json()["code"] == "export.reason_required"
    assert _log_count() == 0


def test_unmasked_export_is_logged_with_who_why_and_what(client, data):
    response = client.get("/api/v1/exports/incidents.geojson?unmasked=true&reason=法院调取&category=06",
                          headers=data["headers"]["supervisor"])
    assert response.status_code == 200
    properties = [f["properties"] for f in response.get_json()["features"] if f["properties"]["party_phone"]]
    assert [(p["party_name"], p["party_phone"], p["party_id_number"]) for p in properties] == [
        (PARTY["name"], PARTY["phone"], PARTY["id_number"])]
    entry = db.session.scalars(select(PersonalDataAccess)).one()
    assert (entry.username, entry.role, entry.reason, entry.purpose) == (
        "supervisor", "supervisor", "法院调取", "export.incidents.geojson")
    assert entry.filters == {"category": "06"}


def test_access_log_is_append_only_in_the_database(client, data):
    client.get("/api/v1/exports/incidents.csv?unmasked=true&reason=audit", headers=data["headers"]["admin"])
    assert _log_count() == 1
    for statement in ("UPDATE personal_data_access_log SET reason = 'nothing'", "DELETE FROM personal_data_access_log"):
        with pytest.raises(DBAPIError, match="append-only"):
            db.session.execute(text(statement))
        db.session.rollback()
    assert db.session.scalars(select(PersonalDataAccess.reason)).one() == "audit"


def test_party_is_recorded_by_the_dispatch_centre_and_answered_masked(client, data):
    incident = data["incidents"][3]
    url = f"/api/v1/incidents/{incident.id}/party"
    response = client.put(url, json={"name": "王五", "phone": "139-8765-4321", "id_number": "33052119850101002x"},
                          headers=data["headers"]["dispatcher"])
    assert response.status_code == 200, response.get_json()
    assert (response.get_json()["party_phone"], response.get_json()["party_id_number"]) == (
        "139****4321", "330521********002X")
    db.session.expire_all()
    stored = db.session.get(Incident, incident.id)
    assert (stored.party_name, stored.party_phone, stored.party_id_number) == ("王五", "13987654321",
                                                                               "33052119850101002X")
    events = client.get(f"/api/v1/incidents/{incident.id}/events", headers=data["headers"]["dispatcher"]).get_json()
    assert events[-1]["action"] == "incident.party_recorded" and "13987654321" not in str(events)
    bad = client.put(url, json={"id_number": "12345"}, headers=data["headers"]["dispatcher"])
    assert bad.status_code == 422 and "id_number" in bad.get_json()["details"]["fields"]
    squad = client.put(url, json={"name": "x"}, headers=data["headers"]["squad_member"])
    assert squad.status_code == 403
    other = client.put(f"/api/v1/incidents/{data['incidents'][6].id}/party", json={"name": "x"},
                       headers=data["headers"]["dispatcher"])
    assert other.status_code == 404  # the other township's case


def test_party_arrives_through_sync_push(app, client, data, tmp_path):
    worker = phone(app, tmp_path, data["users"]["reporter"])
    worker.sync()
    incident_id = worker.report("09006", "占道经营", 120.0005, 30.4995,
                                party={"name": "赵六", "phone": "13700001111", "id_number": "330521199912310018"})
    worker.sync()
    stored = db.session.get(Incident, uuid.UUID(incident_id))
    assert (stored.party_name, stored.party_phone, stored.party_id_number) == (
        "赵六", "13700001111", "330521199912310018")
