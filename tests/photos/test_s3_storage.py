"""The S3 backend against a real S3-compatible server on loopback (moto's server mode, a subprocess):
the storage interface itself, then a whole tus upload, verification, derivation and a ranged download."""
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from gridapp import create_app
from gridapp.extensions import db
from gridapp.jobs.worker import run_worker
from gridapp.models import Incident, PhotoBlob
from gridapp.services import photos
from gridapp.storage import S3Storage, storage
from tests.conftest import TEST_CONFIG
from tests.factories import make_user, make_world, token_for
from tests.photos.images import has_gps, jpeg
from tests.photos.tus import chunk_checksum, metadata, sha256
from tests.workflow.helpers import report

BUCKET = "gridapp-photos-test"


@pytest.fixture(scope="module")
def s3_endpoint():
    from bench.grid_queries import free_port

    port = free_port()
    moto = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline or moto.poll() is not None:
                moto.kill()
                pytest.fail("moto_server did not start")
            time.sleep(0.1)
    yield endpoint
    moto.terminate()
    moto.wait(timeout=10)


@pytest.fixture
def s3(s3_endpoint):
    backend = S3Storage(BUCKET, endpoint_url=s3_endpoint, access_key="test", secret_key="test")
    backend.client.create_bucket(Bucket=BUCKET)
    yield backend
    for item in backend.client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        backend.delete(item["Key"])
    backend.client.delete_bucket(Bucket=BUCKET)


def test_the_storage_interface_on_s3(s3):
    data = bytes(range(256)) * 40_000  # 10 MB: more than one multipart part
    assert s3.put("a/b", (data[i:i + 65536] for i in range(0, len(data), 65536))) == len(data)
    assert s3.exists("a/b") and not s3.exists("a/c")
    assert b"".join(s3.open("a/b")) == data
    assert b"".join(s3.open("a/b", 1000, 2000)) == data[1000:2000]
    assert b"".join(s3.open("a/b", 5, 5)) == b""
    s3.put("a/b", [b"replaced"])
    assert b"".join(s3.open("a/b")) == b"replaced"
    s3.delete("a/b")
    assert not s3.exists("a/b")


def test_a_photo_through_s3_end_to_end(app, s3, s3_endpoint):
    s3_app = create_app({**TEST_CONFIG, "PHOTO_STORAGE": "s3", "PHOTO_S3_BUCKET": BUCKET,
                         "PHOTO_S3_ENDPOINT_URL": s3_endpoint, "PHOTO_S3_ACCESS_KEY": "test",
                         "PHOTO_S3_SECRET_KEY": "test"})
    world = make_world()
    member = make_user("member", "squad_member", world["township_a"], squad=world["squad_a"])
    dispatcher = make_user("dispatcher", "dispatcher", world["township_a"])
    world["users"] = {"reporter": make_user("reporter", "grid_worker", world["township_a"])}
    data = jpeg(size=300_000)
    digest = sha256(data)
    incident = db.session.get(Incident, report(world))  # a report declaring the photo, before its bytes
    photos.declare_photo(incident, {"attachment_id": uuid.uuid4(), "sha256": digest, "size": len(data),
                                    "type": "report"}, user=world["users"]["reporter"])
    db.session.commit()
    client = s3_app.test_client()
    headers = {**token_for(member), "Tus-Resumable": "1.0.0"}
    created = client.post("/api/v1/photos/uploads", headers={**headers, "Upload-Length": str(len(data)),
                                                             "Upload-Metadata": metadata(digest)})
    assert created.status_code == 201
    location = created.headers["Location"]
    for offset in range(0, len(data), 100_000):
        chunk = data[offset:offset + 100_000]
        answer = client.patch(location, data=chunk, headers={
            **headers, "Upload-Offset": str(offset), "Content-Type": "application/offset+octet-stream",
            "Upload-Checksum": chunk_checksum(chunk)})
        assert answer.status_code == 204, answer.get_json()
    with s3_app.app_context():
        assert isinstance(storage(), S3Storage)
        assert b"".join(storage().open(photos.blob_key(digest))) == data
        keys = [o["Key"] for o in storage().client.list_objects_v2(Bucket=BUCKET)["Contents"]]
        assert keys == [photos.blob_key(digest)]  # the parts are gone
        # The derive job, on a real RQ worker, reads and writes S3 too.
        run_worker(s3_app, ["default"], burst=True)
        db.session.expire_all()
        assert db.session.get(PhotoBlob, digest).derived_at is not None
    view = token_for(dispatcher)
    part = client.get(f"/api/v1/photos/{digest}/original", headers={**view, "Range": "bytes=10-19"})
    assert part.status_code == 206 and part.data == data[10:20]
    thumb = client.get(f"/api/v1/photos/{digest}/thumbnail", headers=view)
    assert thumb.status_code == 200 and not has_gps(thumb.data)
    with s3_app.app_context():
        db.engine.dispose()
