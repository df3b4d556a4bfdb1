"""The export tests' world: every role, incidents with and without a party's personal data."""
import pytest

from tests.exports.helpers import build_export_world


@pytest.fixture
def data(app):
    return build_export_world()
