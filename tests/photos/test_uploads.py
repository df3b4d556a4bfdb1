"""tus uploads against a real HTTP server: cuts and resumes, offsets, checksums, hashes, dedupe, orphans,
concurrency, expiry, size limits and the image checks (SYNC.md §5.6)."""
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from gridapp.extensions import db
from gridapp.models import IncidentPhoto, PhotoBlob, PhotoUpload, utcnow
from gridapp.services import photos
from gridapp.storage import storage
from tests.photos.helpers import point_in, report_with
from tests.photos.images import jpeg, png_bomb
from tests.photos.tus import UPLOADS, Tus, sha256


def fresh(model, *where):
    db.session.rollback()  # a fresh view of what the server's threads committed
    return db.session.scalars(select(model).where(*where)).all()


def wait_for_offset(tus: Tus, url: str, expected: int) -> int:
    """The server finishes a cut request on its own thread: wait (bounded) until HEAD shows its outcome."""
    deadline = time.monotonic() + 10
    offset = int(tus.head(url).header("Upload-Offset"))
    while offset != expected and time.monotonic() < deadline:
        time.sleep(0.02)
        offset = int(tus.head(url).header("Upload-Offset"))
    return offset


def write(tmp_path, data: bytes, name: str | None = None) -> str:
    path = tmp_path / (name or f"{uuid.uuid4().hex}.jpg")
    path.write_bytes(data)
    return str(path)


@pytest.mark.parametrize("cut", [1, 11, 12, 13, 65536, 65537, 300_000, -1])
def test_a_cut_at_any_byte_resumes_from_there(tus, cut):
    data = jpeg(size=400_000)
    created = tus.create(sha256(data), len(data))
    assert created.status == 201 and created.header("Upload-Offset") == "0"
    url = created.header("Location")
    sent = cut if cut > 0 else len(data) + cut
    tus.cut_patch(url, 0, data, sent)  # no checksum: every byte that arrived is kept
    assert wait_for_offset(tus, url, sent) == sent
    answer = tus.patch(url, sent, data[sent:])
    assert answer.status == 204 and answer.header("Upload-Offset") == str(len(data))
    blob = fresh(PhotoBlob)[0]
    assert (blob.sha256, blob.size, blob.mime) == (sha256(data), len(data), "image/jpeg")
    assert b"".join(storage().open(photos.blob_key(blob.sha256))) == data  # byte-exact
    assert fresh(PhotoUpload) == [] and tus.head(url).status == 404  # HEAD answers carry no body


def test_a_cut_chunk_with_a_checksum_is_dropped_whole_and_resent(tus):
    data = jpeg(size=300_000)
    url = tus.create(sha256(data), len(data)).header("Location")
    assert tus.patch(url, 0, data[:100_000]).status == 204
    tus.cut_patch(url, 100_000, data[100_000:200_000], 50_000, checksum=True)
    time.sleep(0.3)  # give the server's thread time to (wrongly) store anything
    assert int(tus.head(url).header("Upload-Offset")) == 100_000
    assert tus.patch(url, 100_000, data[100_000:]).status == 204
    assert [b.sha256 for b in fresh(PhotoBlob)] == [sha256(data)]


def test_wrong_offset_is_409_with_the_current_offset(tus):
    data = jpeg(size=200_000)
    url = tus.create(sha256(data), len(data)).header("Location")
    assert tus.patch(url, 0, data[:50_000]).status == 204
    for wrong in (0, 49_999, 50_001):
        answer = tus.patch(url, wrong, data[wrong:wrong + 1000])
        assert answer.status == 409 and answer.code == "photo.offset_mismatch"
        assert answer.json()["details"]["current_offset"] == 50_000
    assert int(tus.head(url).header("Upload-Offset")) == 50_000


def test_two_patches_racing_for_one_offset_store_it_once(tus):
    data = jpeg(size=600_000)
    url = tus.create(sha256(data), len(data)).header("Location")
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda _: tus.patch(url, 0, data[:300_000]), range(4)))
    statuses = sorted(a.status for a in answers)
    assert statuses[0] == 204 and statuses.count(204) == 1 and set(statuses[1:]) == {409}
    assert all(a.json()["details"]["current_offset"] == 300_000 for a in answers if a.status == 409)
    upload = fresh(PhotoUpload)[0]
    assert upload.offset == 300_000 and len(upload.parts) == 1
    assert tus.patch(url, 300_000, data[300_000:]).status == 204
    assert b"".join(storage().open(photos.blob_key(sha256(data)))) == data


def test_a_corrupted_chunk_is_460_and_discarded(tus):
    data = jpeg(size=200_000)
    url = tus.create(sha256(data), len(data)).header("Location")
    damaged = bytearray(data[:100_000])
    damaged[5000] ^= 0xFF
    answer = tus.patch(url, 0, bytes(damaged), checksum=tus_checksum(data[:100_000]))
    assert answer.status == 460 and answer.code == "photo.checksum_mismatch"
    assert int(tus.head(url).header("Upload-Offset")) == 0
    assert tus.patch(url, 0, data).status == 204
    assert fresh(PhotoBlob)[0].sha256 == sha256(data)


def tus_checksum(data):
    from tests.photos.tus import chunk_checksum
    return chunk_checksum(data)


def test_whole_file_hash_mismatch_restarts_the_upload_and_binds_nothing(phone, tus, tmp_path):
    data, other = jpeg(size=150_000), jpeg(size=150_000)
    report_with(phone, [write(tmp_path, data)])
    url = tus.create(sha256(data), len(other)).header("Location")
    answer = tus.patch(url, 0, other)
    assert answer.status == 422 and answer.code == "photo.hash_mismatch"
    assert answer.json()["details"]["actual"] == sha256(other)
    assert int(tus.head(url).header("Upload-Offset")) == 0
    assert fresh(PhotoBlob) == []
    assert [p.blob_sha256 for p in fresh(IncidentPhoto)] == [None]
    assert tus.patch(url, 0, data).status == 204  # the right bytes still go through the same upload
    assert [p.blob_sha256 for p in fresh(IncidentPhoto)] == [sha256(data)]


def test_the_same_photo_in_two_incidents_is_stored_once_and_sent_once(phone, tus, tmp_path):
    data = jpeg(size=120_000)
    path = write(tmp_path, data)
    first = report_with(phone, [path], index=0)
    second = report_with(phone, [(path, "before_handling")], index=1, description="另一处")
    assert tus.upload(data).status == 204
    again = tus.create(sha256(data), len(data))  # "already have it": no bytes need sending
    assert again.status == 200 and again.header("Blob-Exists") == "1"
    assert again.header("Upload-Offset") == str(len(data))
    assert len(fresh(PhotoBlob)) == 1
    bound = {p.incident_id: p.blob_sha256 for p in fresh(IncidentPhoto)}
    assert bound == {uuid.UUID(first): sha256(data), uuid.UUID(second): sha256(data)}
    assert phone.upload_photos() == {"uploaded": 0, "already_there": 2, "refused": 0}


def test_different_bytes_for_a_bound_attachment_are_refused(phone, tus, tmp_path, client, world):
    data = jpeg(size=100_000)
    incident_id = report_with(phone, [write(tmp_path, data)])
    assert tus.upload(data).status == 204
    attachment_id = next(iter(phone.photos()))
    other = jpeg(size=100_000)
    spec = {"attachment_id": attachment_id, "sha256": sha256(other), "size": len(other), "type": "report"}
    phone._enqueue({"type": "photo.add", "incident_id": incident_id, "photos": [spec]})
    phone.push()
    result = [r for r in phone.results().values() if r.get("code") == "attachment_immutable"]
    assert len(result) == 1 and result[0]["status"] == "quarantined"
    from tests.factories import token_for
    answer = client.post(f"/api/v1/incidents/{incident_id}/actions/register", headers=token_for(world["dispatcher"]),
                         json={"photos": [spec]})
    assert answer.status_code == 409 and answer.get_json()["code"] == "photo.immutable"
    photo = fresh(IncidentPhoto)[0]
    assert (str(photo.id), photo.sha256, photo.blob_sha256) == (attachment_id, sha256(data), sha256(data))


def test_a_blob_before_its_mutation_waits_as_an_orphan_and_binds_on_arrival(app, phone, tus, tmp_path):
    data = jpeg(size=100_000)
    assert tus.upload(data).status == 204
    assert fresh(PhotoBlob)[0].sha256 == sha256(data) and fresh(IncidentPhoto) == []
    lon, lat = point_in(0)
    phone.report("06010", "先传照片", lon, lat, photos=[write(tmp_path, data)])
    phone.push()
    result = next(iter(phone.results().values()))
    assert result["photos"][0]["state"] == "present" and result["photos"][0]["upload"] == "not_needed"
    assert fresh(IncidentPhoto)[0].blob_sha256 == sha256(data)
    # An orphan nobody declares is collected after PHOTO_ORPHAN_DAYS; a declared one never is.
    orphan = jpeg(size=50_000)
    assert tus.upload(orphan).status == 204
    db.session.execute(update(PhotoBlob).values(created_at=utcnow() - timedelta(days=31)))
    db.session.commit()
    assert photos.collect_garbage() == {"expired_uploads": 0, "orphan_blobs": 1}
    assert [b.sha256 for b in fresh(PhotoBlob)] == [sha256(data)]
    assert not storage().exists(photos.blob_key(sha256(orphan)))
    assert storage().exists(photos.blob_key(sha256(data)))


def test_concurrent_uploads_of_the_same_hash_from_two_devices(world, live_server, phone, tmp_path):
    from sync.client import HttpTransport, PhoneClient
    from tests.factories import PASSWORD
    second = PhoneClient(HttpTransport(live_server), str(tmp_path / "second.sqlite"))
    second.register("worker", PASSWORD)
    data = jpeg(size=2_000_000)
    path = write(tmp_path, data)
    report_with(phone, [path], index=0)
    report_with(second, [path], index=1)
    clients = [Tus(live_server, p._meta("access_token")) for p in (phone, second)]
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda t: t.upload(data, chunk=256 * 1024), clients))
    # Each device finishes its own upload or, arriving second, learns the blob is already there.
    assert all(a.status in (200, 204) for a in answers), [(a.status, a.body) for a in answers]
    assert [b.sha256 for b in fresh(PhotoBlob)] == [sha256(data)]
    assert [p.blob_sha256 for p in fresh(IncidentPhoto)] == [sha256(data)] * 2
    assert b"".join(storage().open(photos.blob_key(sha256(data)))) == data
    assert fresh(PhotoUpload) == []


def test_an_expired_upload_is_410_then_collected(tus):
    data = jpeg(size=100_000)
    created = tus.create(sha256(data), len(data))
    assert created.header("Upload-Expires")  # expiration extension
    url = created.header("Location")
    assert tus.patch(url, 0, data[:40_000]).status == 204
    part = fresh(PhotoUpload)[0].parts[0][2]
    assert storage().exists(part)
    db.session.execute(update(PhotoUpload).values(expires_at=utcnow() - timedelta(seconds=1)))
    db.session.commit()
    answer = tus.patch(url, 40_000, data[40_000:])
    assert answer.status == 410 and answer.code == "photo.upload_expired"
    assert tus.head(url).status == 410
    assert photos.collect_garbage() == {"expired_uploads": 1, "orphan_blobs": 0}
    assert fresh(PhotoUpload) == [] and not storage().exists(part)
    again = tus.create(sha256(data), len(data))
    assert again.status == 201 and again.header("Location") != url
    assert tus.patch(again.header("Location"), 0, data).status == 204


def test_oversized_uploads_are_413_with_the_limit_before_any_body(app, tus):
    limit = app.config["PHOTO_MAX_BYTES"]
    answer = tus.create("a" * 64, limit + 1)
    assert answer.status == 413 and answer.json()["details"]["limit_bytes"] == limit
    data = jpeg(size=10_000)
    url = tus.create(sha256(data), len(data)).header("Location")
    # Headers announce 1 GB and no byte of body follows: the answer must come without reading it.
    answer = tus.announce_only(url, 1 << 30)
    assert answer.status == 413 and answer.json()["details"]["limit_bytes"] == app.config["PHOTO_MAX_CHUNK_BYTES"]
    too_long = tus.patch(url, 0, data + b"x")  # past Upload-Length
    assert too_long.status == 413 and too_long.json()["details"]["limit_bytes"] == len(data)
    chunked = tus.patch(url, 0, iter([data, b"more than announced"]), checksum=False)  # chunked: counted as it comes
    assert chunked.status == 413 and chunked.json()["details"]["limit_bytes"] == len(data)
    assert int(tus.head(url).header("Upload-Offset")) == 0 and fresh(PhotoUpload)[0].parts == []


def test_a_non_image_is_refused_by_its_bytes_whatever_its_name(phone, tus, tmp_path):
    text = b"#!/bin/sh\necho not a photo\n" * 100
    report_with(phone, [write(tmp_path, text, "IMG_0001.jpg")])
    url = tus.create(sha256(text), len(text)).header("Location")
    answer = tus.patch(url, 0, text)
    assert answer.status == 415 and answer.code == "photo.not_an_image"
    assert fresh(PhotoUpload) == [] and fresh(PhotoBlob) == []
    assert [(p.blob_sha256, p.problem) for p in fresh(IncidentPhoto)] == [(None, "photo.not_an_image")]
    assert phone.missing_photos() == []  # refused photos are not asked for again


@pytest.mark.parametrize("make,code", [
    (lambda: jpeg(size=50_000)[:-50], "photo.invalid_image"),  # truncated JPEG
    (lambda: png_bomb(8000), "photo.too_many_pixels"),  # 64 MP in 8 KB: a decompression bomb
    (lambda: png_bomb(20000), "photo.too_many_pixels"),  # 400 MP: above Pillow's own hard limit too
])
def test_truncated_and_bomb_images_are_refused(phone, tus, tmp_path, make, code):
    data = make()
    report_with(phone, [write(tmp_path, data, "photo.png")])
    answer = tus.upload(data)
    assert answer.status == 422 and answer.code == code
    assert fresh(PhotoBlob) == [] and fresh(PhotoUpload) == []
    assert fresh(IncidentPhoto)[0].problem == code
    assert phone.upload_photos() == {"uploaded": 0, "already_there": 0, "refused": 1}
    assert next(iter(phone.photos().values()))["problem"] == code


def test_tus_version_termination_and_foreign_uploads(tus, live_server, world):
    data = jpeg(size=30_000)
    discovery = tus.request("OPTIONS", UPLOADS, tus=False)  # tus discovery: what this server speaks
    assert discovery.header("Tus-Version") == "1.0.0"
    assert discovery.header("Tus-Extension") == "creation,checksum,expiration,termination"
    assert "sha256" in discovery.header("Tus-Checksum-Algorithm").split(",")
    assert tus.request("POST", UPLOADS, {"Upload-Length": "10"}, tus=False).code == "photo.tus_version"
    assert tus.request("POST", UPLOADS, {"Upload-Length": "10", "Upload-Metadata": "sha256 !!"}).code == "bad_request"
    url = tus.create(sha256(data), len(data)).header("Location")
    from tests.photos.helpers import bearer
    member = Tus(live_server, bearer(world["member"]))  # another uploader cannot see or touch it
    assert member.head(url).status == 404
    assert member.request("DELETE", url).code == "photo.upload_not_found"
    assert tus.request("DELETE", url).status == 204
    assert tus.head(url).status == 404 and fresh(PhotoUpload) == []


def test_sync_config_advertises_the_photo_limits(app, phone):
    config = phone._call("GET", "/api/v1/sync/config").body
    assert config["photo_types"] == ["report", "before_handling", "after_handling", "check"]
    assert (config["photo_max_bytes"], config["photo_max_chunk_bytes"]) == (
        app.config["PHOTO_MAX_BYTES"], app.config["PHOTO_MAX_CHUNK_BYTES"])
    assert "photo.add" in config["mutation_types"]


def test_missing_photos_for_a_reinstalled_phone(world, live_server, phone, tus, tmp_path):
    from sync.client import HttpTransport, PhoneClient
    from tests.factories import PASSWORD
    first, second = jpeg(size=60_000), jpeg(size=60_000)
    paths = [write(tmp_path, first), write(tmp_path, second)]
    incident_id = report_with(phone, paths)
    assert {m["sha256"] for m in phone.missing_photos()} == {sha256(first), sha256(second)}
    assert tus.upload(first).status == 204
    assert [m["sha256"] for m in phone.missing_photos()] == [sha256(second)]
    # The app is reinstalled: a new store, a new device; the gallery still has the files.
    reinstalled = PhoneClient(HttpTransport(live_server), str(tmp_path / "reinstalled.sqlite"))
    reinstalled.register("worker", PASSWORD)
    missing = reinstalled.missing_photos()
    assert [(m["incident_id"], m["sha256"]) for m in missing] == [(incident_id, sha256(second))]
    assert reinstalled.adopt_missing(paths) == 1
    assert reinstalled.upload_photos() == {"uploaded": 1, "already_there": 0, "refused": 0}
    assert reinstalled.missing_photos() == []
    assert db.session.scalar(select(func.count()).select_from(IncidentPhoto)
                             .where(IncidentPhoto.blob_sha256.is_(None))) == 0
