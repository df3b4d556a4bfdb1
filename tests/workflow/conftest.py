"""Fixtures shared by the workflow tests: a world with every role, and a real webhook receiver."""
import pytest

from tests.workflow.helpers import WebhookReceiver, build_world, point_squad_at


@pytest.fixture
def world(app):
    return build_world()


@pytest.fixture
def receiver(world):
    receiver = WebhookReceiver()
    point_squad_at(world["squad_a"], receiver)
    yield receiver
    receiver.close()
