"""A running deployment (demo.stack's processes) and the fake services around it, as the
end-to-end tests use it."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

import requests

from demo.app_receiver import AppReceiver
from demo.fake_tracker import FakeTracker
from demo.stack import Stack
from tests.support.auth import bearer


@dataclass
class Deployment:
    stack: Stack
    tracker: FakeTracker
    receiver: AppReceiver
    api_key: str
    signing_key: str
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.stack.base_url

    def auth(self) -> dict[str, str]:
        return bearer(self.api_key)

    def records(self, connection_id: str = "acme", **params: Any) -> dict[str, Any]:
        response = requests.get(
            f"{self.url}/records",
            params={"model": "Task", **params},
            headers={**self.auth(), "Connection-Id": connection_id,
                     "Provider-Config-Key": "tasktracker"},
            timeout=10,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        return response.json()

    def record(self, task_id: str) -> dict[str, Any]:
        found = self.records(ids=task_id)["records"]
        assert len(found) == 1, found
        return found[0]


def new_fakes() -> tuple[str, str, FakeTracker, AppReceiver]:
    """Fresh secrets and fakes for a deployment: its API key, its webhook signing key, a
    fake tracker for workspace ``ws_acme`` and an app receiver checking that signing key."""
    api_key, signing_key = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    tracker = FakeTracker(
        api_token=secrets.token_urlsafe(16),
        webhook_secret=secrets.token_urlsafe(16),
        workspace_id="ws_acme",
    )
    receiver = AppReceiver(signing_key)
    return api_key, signing_key, tracker, receiver
