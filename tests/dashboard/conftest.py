"""Fixtures for the dashboard: the workflow world and a browser-like client that signs in with a session."""
import re

import pytest

from tests.factories import PASSWORD
from tests.workflow.conftest import receiver, world  # noqa: F401  the workflow tests' world and webhook receiver


class Browser:
    """The Flask test client over HTTPS (the session cookie is Secure), keeping the page's CSRF token."""

    def __init__(self, app):
        self.client = app.test_client()
        self.csrf = None

    def get(self, path, **kwargs):
        response = self.client.get(path, base_url="https://localhost", **kwargs)
        found = response.mimetype == "text/html" and re.search(r'name="csrf_token" value="([^"]+)"',
                                                                response.get_data(as_text=True))
        if found:
            self.csrf = found.group(1)
        return response

    def post(self, path, data=None, csrf=True, **kwargs):
        data = dict(data or {})
        if csrf:
            data["csrf_token"] = self.csrf
        return self.client.post(path, data=data, base_url="https://localhost", **kwargs)

    def login(self, user, password=PASSWORD):
        self.get("/dashboard/login")
        return self.post("/dashboard/login", {"username": user.username, "password": password})


@pytest.fixture
def browser(app):
    return Browser(app)
