"""Derived images (EXIF and GPS gone, orientation applied), scoped downloads with ETag and Range, the
incident's photo list, and the after-handling photo the workflow requires."""
import io
import uuid

import pytest
from PIL import Image

from gridapp.extensions import db
from gridapp.models import Incident, IncidentPhoto
from gridapp.services.photos import derive
from tests.factories import token_for
from tests.photos.helpers import drain, report_with
from tests.photos.images import has_gps, jpeg
from tests.photos.tus import sha256
from tests.workflow.helpers import act, build_world, photo_spec, report


def url(digest, variant):
    return f"/api/v1/photos/{digest}/{variant}"


@pytest.fixture
def uploaded(app, world, phone, tmp_path):
    """A report with one photo (64×48, EXIF orientation 6 = rotate 90°, GPS) uploaded by the phone."""
    data = jpeg(width=64, height=48, size=200_000, orientation=6)
    path = tmp_path / "IMG_0001.jpg"
    path.write_bytes(data)
    incident_id = report_with(phone, [str(path)])
    assert phone.upload_photos() == {"uploaded": 1, "already_there": 0, "refused": 0}
    return {"incident_id": incident_id, "data": data, "sha256": sha256(data)}


def test_derived_images_are_upright_and_carry_no_exif_or_gps(app, client, world, uploaded):
    headers = token_for(world["dispatcher"])
    digest = uploaded["sha256"]
    assert client.get(url(digest, "display"), headers=headers).get_json()["code"] == "photo.not_found"  # not yet
    drain(app)  # the derive job, on a real RQ worker
    original = client.get(url(digest, "original"), headers=headers)
    assert original.status_code == 200 and original.data == uploaded["data"]  # evidence: byte-exact
    assert has_gps(original.data)
    for variant in ("display", "thumbnail"):
        response = client.get(url(digest, variant), headers=headers)
        assert response.status_code == 200 and response.mimetype == "image/jpeg"
        assert not has_gps(response.data), variant
        assert b"Exif" not in response.data and b"TestPhone" not in response.data
        with Image.open(io.BytesIO(response.data)) as image:
            assert image.size == (48, 64)  # orientation 6 applied: portrait
            assert not image.getexif() and "comment" not in image.info
    listed = client.get(f"/api/v1/incidents/{uploaded['incident_id']}", headers=headers).get_json()
    assert listed["photos_missing"] == 0
    assert listed["photos"][0]["state"] == "present" and listed["photos"][0]["urls"] == {
        "original": url(digest, "original"), "display": url(digest, "display"),
        "thumbnail": url(digest, "thumbnail")}
    assert derive(digest) == "done"  # the job is idempotent: a second run changes nothing


def test_downloads_are_scoped_cached_and_ranged(app, client, world, uploaded):
    digest, data = uploaded["sha256"], uploaded["data"]
    other = token_for(world["other_dispatcher"])  # the other township: as if it did not exist
    for variant in ("original", "display", "thumbnail"):
        response = client.get(url(digest, variant), headers=other)
        assert response.status_code == 404 and response.get_json()["code"] == "photo.not_found"
    headers = token_for(world["dispatcher"])
    assert client.get(url("0" * 64, "original"), headers=headers).status_code == 404
    assert client.get(url(digest, "raw"), headers=headers).status_code == 404
    whole = client.get(url(digest, "original"), headers=headers)
    assert whole.headers["ETag"] == f'"{digest}"' and "immutable" in whole.headers["Cache-Control"]
    assert whole.headers["Accept-Ranges"] == "bytes" and whole.headers["X-Content-Type-Options"] == "nosniff"
    cached = client.get(url(digest, "original"), headers={**headers, "If-None-Match": f'"{digest}"'})
    assert cached.status_code == 304 and cached.data == b""
    part = client.get(url(digest, "original"), headers={**headers, "Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.data == data[100:1100]
    assert part.headers["Content-Range"] == f"bytes 100-1099/{len(data)}"
    tail = client.get(url(digest, "original"), headers={**headers, "Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.data == data[-10:]
    beyond = client.get(url(digest, "original"), headers={**headers, "Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416 and beyond.get_json()["code"] == "photo.range_not_satisfiable"
    several = client.get(url(digest, "original"), headers={**headers, "Range": "bytes=0-1,5-6"})
    assert several.status_code == 200 and several.data == data  # one range or the whole photo
    # The phone that reported it (a grid worker, by its pull scope) may download it too.
    worker = client.get(url(digest, "original"), headers=token_for(world["worker"]))
    assert worker.status_code == 200


def test_an_incident_shows_which_declared_photos_are_missing(client, world, phone, tmp_path):
    paths = []
    for name in ("near.jpg", "far.jpg"):
        (tmp_path / name).write_bytes(jpeg(size=20_000))
        paths.append(str(tmp_path / name))
    incident_id = report_with(phone, paths)
    headers = token_for(world["dispatcher"])
    detail = client.get(f"/api/v1/incidents/{incident_id}", headers=headers).get_json()
    assert detail["photos_missing"] == 2 and {p["state"] for p in detail["photos"]} == {"missing"}
    assert all(p["urls"]["original"] is None for p in detail["photos"])
    phone.upload_photos()
    listed = client.get(f"/api/v1/incidents/{incident_id}/photos", headers=headers).get_json()
    assert [p["state"] for p in listed] == ["present", "present"]
    assert client.get(f"/api/v1/incidents/{incident_id}/photos",
                      headers=token_for(world["other_dispatcher"])).status_code == 404


# --- the workflow needs an after-handling photo ----------------------------------------------------------
@pytest.fixture
def case_world(app):
    return build_world()


def _to_handling(client, world, case):
    users = world["users"]
    assert act(client, users["dispatcher"], case, "register").status_code == 200
    assert act(client, users["dispatcher"], case, "dispatch", squad_code="01").status_code == 200
    assert act(client, users["squad_member"], case, "accept").status_code == 200


def test_completing_needs_an_after_handling_photo(app, client, case_world):
    users, case = case_world["users"], report(case_world)
    _to_handling(client, case_world, case)
    for photos in ([], [photo_spec("before_handling")]):
        refused = act(client, users["squad_member"], case, "submit_result", "清理完毕", photos=photos)
        assert refused.status_code == 422 and refused.get_json()["code"] == "workflow.after_photo_required"
    assert db.session.get(Incident, case).status == "handling"
    after = photo_spec("after_handling", b"after photo bytes")
    done = act(client, users["squad_member"], case, "submit_result", "清理完毕", photos=[after])
    assert done.status_code == 200 and done.get_json()["event"]["details"]["photos"][0]["sha256"] == after["sha256"]
    photo = db.session.get(IncidentPhoto, uuid.UUID(after["attachment_id"]))
    assert (photo.photo_type, photo.event_id, photo.blob_sha256) == ("after_handling",
                                                                      done.get_json()["event"]["id"], None)
    # The reporter's own close (自行处置) needs one too.
    second = report(case_world)
    assert act(client, users["reporter"], second, "self_handle", "随手清理", photos=[]).get_json()["code"] == \
        "workflow.after_photo_required"
    assert act(client, users["reporter"], second, "self_handle", "随手清理").status_code == 200


def test_the_requirement_can_be_turned_off(app, client, case_world):
    users, case = case_world["users"], report(case_world)
    _to_handling(client, case_world, case)
    app.config["WORKFLOW_REQUIRE_AFTER_PHOTO"] = False
    try:
        assert act(client, users["squad_member"], case, "submit_result", "清理完毕", photos=[]).status_code == 200
    finally:
        app.config["WORKFLOW_REQUIRE_AFTER_PHOTO"] = True


def test_a_duplicates_photos_join_its_master(client, case_world):
    users = case_world["users"]
    master, duplicate = report(case_world), report(case_world, description="same garbage")
    near = photo_spec("report", b"near shot")
    db.session.add(IncidentPhoto(id=uuid.UUID(near["attachment_id"]), incident_id=duplicate, photo_type="report",
                                 sha256=near["sha256"], size=near["size"], declared_by_id=users["reporter"].id))
    db.session.commit()
    merged = act(client, users["dispatcher"], duplicate, "merge", master_id=str(master))
    assert merged.status_code == 200 and merged.get_json()["event"]["details"]["photos_copied"] == 1
    master_photos = db.session.query(IncidentPhoto).filter_by(incident_id=master).all()
    assert [(p.sha256, p.photo_type) for p in master_photos] == [(near["sha256"], "report")]
