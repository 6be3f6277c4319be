"""A running deployment (demo.stack's processes) and the fake services around it, as the
end-to-end tests use it."""

from __future__ import annotations

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
