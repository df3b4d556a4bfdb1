"""Large exports as RQ jobs run by a real worker: progress, a signed download link that expires, cleanup."""
import os
from datetime import timedelta

from sqlalchemy import select

from gridapp.extensions import db
from gridapp.jobs.exports import purge_exports
from gridapp.jobs.worker import run_worker
from gridapp.models import ExportJob, PersonalDataAccess, utcnow
from gridapp.services import export_jobs
from tests.exports.helpers import PARTY, feature_count, ogrinfo


def _start(client, data, user="dispatcher", **body):
    response = client.post("/api/v1/exports", json={"layer": "incidents", "format": "gpkg", **body},
                           headers=data["headers"][user])
    assert response.status_code == 202, response.get_json()
    return response.get_json()


def test_job_writes_the_file_and_the_link_downloads_it(app, client, data, tmp_path):
    job = _start(client, data, category="06")
    assert job["state"] == "queued" and job["download_url"] is None
    record = db.session.get(ExportJob, job["id"])
    early = client.get(f"/api/v1/exports/download/{export_jobs.download_token(record)}")
    assert early.status_code == 409 and early.get_json()["code"] == "export.not_ready"
    db.session.rollback()

    run_worker(app, ["default"], burst=True)
    status = client.get(f"/api/v1/exports/{job['id']}", headers=data["headers"]["dispatcher"]).get_json()
    assert (status["state"], status["rows_total"], status["rows_done"]) == ("done", 4, 4)
    response = client.get(status["download_url"].replace("http://localhost", ""))
    assert response.status_code == 200
    path = tmp_path / "job.gpkg"
    path.write_bytes(response.get_data())
    summary = ogrinfo("-al", "-so", str(path))
    assert feature_count(summary) == 4
    assert PARTY["phone"].encode() not in path.read_bytes()


def test_another_users_job_is_not_found(client, data):
    job = _start(client, data)
    response = client.get(f"/api/v1/exports/{job['id']}", headers=data["headers"]["duty_chief"])
    assert response.status_code == 404 and response.get_json()["code"] == "export.not_found"


def test_unmasked_job_needs_permission_and_reason_and_is_logged(app, client, data, tmp_path):
    response = client.post("/api/v1/exports", json={"layer": "incidents", "format": "csv", "unmasked": True},
                           headers=data["headers"]["supervisor"])
    assert response.status_code == 422 and response.get_json()["code"] == "export.reason_required"
    response = client.post("/api/v1/exports", json={"layer": "incidents", "format": "csv", "unmasked": True,
                                                    "reason": "x"}, headers=data["headers"]["dispatcher"])
    assert response.status_code == 403
    job = _start(client, data, user="supervisor", format="csv", unmasked=True, reason="信访核查")
    entry = db.session.scalars(select(PersonalDataAccess)).one()
    assert (entry.reason, str(entry.export_job_id), entry.purpose) == ("信访核查", job["id"], "export_job.incidents.csv")
    run_worker(app, ["default"], burst=True)
    status = client.get(f"/api/v1/exports/{job['id']}", headers=data["headers"]["supervisor"]).get_json()
    body = client.get(status["download_url"].replace("http://localhost", "")).get_data()
    assert PARTY["id_number"].encode() in body and body.startswith(b"\xef\xbb\xbf")


def test_expired_link_is_refused_and_the_file_purged(app, client, data):
    job = _start(client, data, format="shp")
    run_worker(app, ["default"], burst=True)
    status = client.get(f"/api/v1/exports/{job['id']}", headers=data["headers"]["dispatcher"]).get_json()
    url = status["download_url"].replace("http://localhost", "")
    record = db.session.get(ExportJob, job["id"])
    path = record.file_path
    assert os.path.exists(path)
    record.expires_at = utcnow() - timedelta(seconds=1)
    db.session.commit()
    response = client.get(url)
    assert response.status_code == 403 and response.get_json()["code"] == "export.link_invalid"
    assert purge_exports() == 1
    assert not os.path.exists(path)
    db.session.expire_all()
    assert db.session.get(ExportJob, job["id"]).state == "expired"
    tampered = client.get(url[:-3] + "abc")
    assert tampered.status_code == 403
