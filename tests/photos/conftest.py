"""Photos tests: a township with a grid worker's phone, dispatchers on both sides, a live HTTP server."""
import shutil
from pathlib import Path

import pytest

from gridapp.extensions import db
from sync.client import HttpTransport, PhoneClient
from tests.conftest import TEST_CONFIG
from tests.factories import PASSWORD, make_user, make_world
from tests.photos.tus import Tus


@pytest.fixture(autouse=True)
def empty_photo_storage():
    """Each test starts and ends with an empty photo store (the database is emptied by tests/conftest.py)."""
    root = Path(TEST_CONFIG["PHOTO_STORAGE_DIR"])
    for child in root.iterdir():
        shutil.rmtree(child)
    yield
    for child in root.iterdir():
        shutil.rmtree(child)


@pytest.fixture
def world(app):
    world = make_world(cols=3, rows=2)
    world["worker"] = make_user("worker", "grid_worker", world["township_a"], cells=world["cells_a"][:3])
    world["dispatcher"] = make_user("dispatcher", "dispatcher", world["township_a"])
    world["other_dispatcher"] = make_user("other_dispatcher", "dispatcher", world["township_b"])
    world["member"] = make_user("member", "squad_member", world["township_a"], squad=world["squad_a"])
    db.session.commit()
    return world


@pytest.fixture
def phone(world, live_server, tmp_path):
    client = PhoneClient(HttpTransport(live_server), str(tmp_path / "phone.sqlite"))
    client.register("worker", PASSWORD)
    return client


@pytest.fixture
def tus(phone, live_server):
    """A tus client with the phone's device token."""
    return Tus(live_server, phone._meta("access_token"))
