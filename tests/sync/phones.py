"""Phones for sync tests: the reference client over the app in-process (WSGI) or a live server."""
import json
import threading

from sqlalchemy import func, select

from gridapp.extensions import db
from gridapp.models import QuarantineItem, SyncReceipt
from sync import protocol as p
from sync.client import PhoneClient, Response, WsgiTransport
from tests.factories import PASSWORD


def phone(app, tmp_path, user, name="phone", register=True) -> PhoneClient:
    client = PhoneClient(WsgiTransport(app), str(tmp_path / f"{name}.sqlite"))
    if register:
        client.register(user.username, PASSWORD)
    return client


def assert_exactly_once(*phones):
    """The invariant: every mutation a phone generated has exactly one receipt or quarantine record."""
    db.session.expire_all()
    for client in phones:
        assert client.outbox() == [], "the outbox drained"
        for mutation_id, result in client.results().items():
            receipts = db.session.scalar(select(func.count()).select_from(SyncReceipt)
                                         .where(SyncReceipt.mutation_id == mutation_id))
            quarantined = db.session.scalar(select(func.count()).select_from(QuarantineItem)
                                            .where(QuarantineItem.mutation_id == mutation_id))
            assert receipts == 1 or quarantined >= 1, (mutation_id, result)
            assert receipts <= 1


def push_outbox_at_once(client: PhoneClient, links, headers: dict, pool) -> list[Response]:
    """Take the phone's outbox as one batch and POST it on each link (its own connection) at the same moment,
    as a retry racing its first try; return the answers, in the links' order."""
    body = json.dumps({"protocol_version": p.PROTOCOL_VERSION, "mutations": client.outbox()}).encode()
    client.db.execute("DELETE FROM outbox")
    client.db.commit()
    barrier = threading.Barrier(len(links))

    def send(link):
        barrier.wait(timeout=10)
        return link("POST", "/api/v1/sync/mutations", headers, body)
    return [future.result(timeout=60) for future in [pool.submit(send, link) for link in links]]
