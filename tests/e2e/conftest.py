"""A whole deployment as real processes: gunicorn, a Celery worker, Celery beat, the
embedded Redis (HOOKSYNC_REDIS_URL unset) and SQLite, plus the demo's fake task tracker
and app receiver on loopback.

The deployment runs the bundled example integration with its poll slowed to once a day:
the connection's initial sync runs at once as always, and a later poll runs only when a
test triggers it. At the example's own 30 seconds, a poll could land between a test's change
to the tracker and its webhook, store the change first and leave the webhook's run nothing
to update (``updated=0``), whatever the code under test does.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from demo.http_thread import ServerThread
from demo.stack import Stack
from tests.support.deployment import Deployment, new_fakes
from tests.support.integrations import copy_example_integrations
from tests.support.notifications import notified
from tests.support.servers import free_port

#: The example's poll frequency here: no scheduled poll during a test session.
POLL_FREQUENCY = "every 1 day"


@pytest.fixture(
    scope="session", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """The embedded default (SQLite), and the production shape (Postgres) for the same tests."""
    database_url = ""  # SQLite under the var dir
    if request.param == "postgres":
        database_url = request.getfixturevalue("postgres_server").create_database("e2e")
    api_key, signing_key, tracker, receiver = new_fakes()
    with tempfile.TemporaryDirectory(prefix="hooksync-e2e-") as folder:
        tracker_server = ServerThread(tracker.app).start()
        receiver_server = ServerThread(receiver.app).start()
        integrations = copy_example_integrations(Path(folder) / "integrations", runs=POLL_FREQUENCY)
        env = {
            "HOOKSYNC_VAR_DIR": str(Path(folder) / "var"),
            "HOOKSYNC_INTEGRATIONS_DIR": str(integrations),
            "HOOKSYNC_REDIS_URL": "",  # the embedded default
            "HOOKSYNC_DATABASE_URL": database_url,
            "HOOKSYNC_PORT": str(free_port()),
            "HOOKSYNC_SECRET_KEY": api_key,
            "HOOKSYNC_WEBHOOK_SIGNING_KEY": signing_key,
            "HOOKSYNC_APP_WEBHOOK_URLS": f"{receiver_server.url}/hooks/hooksync",
            "HOOKSYNC_TICK_SECONDS": "1",
            # The production shape: every test reads JSON logs (tests/e2e/test_logs.py).
            "HOOKSYNC_LOG_FORMAT": "json",
            "TASKTRACKER_BASE_URL": tracker_server.url,
            "TASKTRACKER_WEBHOOK_SECRET": tracker.webhook_secret,
        }
        stack = Stack(env, log_dir=Path(folder) / "logs")
        tracker.webhook_url = f"{stack.base_url}/webhook/tasktracker"
        try:
            stack.start()
            yield Deployment(stack, tracker, receiver, api_key, signing_key, env)
        except BaseException:
            for name in ("web", "worker", "beat"):
                print(f"--- {name} log ---\n{stack.tail(name, 80)}")
            raise
        finally:
            stack.stop()
            tracker.release_list_requests()
            tracker_server.stop()
            receiver_server.stop()


@pytest.fixture(scope="session")
def connected(deployment: Deployment) -> Deployment:
    """The tracker has three tasks; creating the connection runs the initial sync at once."""
    for title in ("Write the launch post", "Fix login redirect", "Plan Q3 roadmap"):
        deployment.tracker.create_task(title, notify=False)
    response = requests.post(
        f"{deployment.url}/connections",
        json={
            "provider_config_key": "tasktracker",
            "connection_id": "acme",
            "credentials": {"type": "API_KEY", "api_key": deployment.tracker.api_token},
            "metadata": {"workspace_id": "ws_acme"},
        },
        headers=deployment.auth(),
        timeout=10,
    )
    assert response.status_code == 201, response.text
    assert deployment.tracker.api_token not in response.text
    deployment.receiver.wait_for(notified("INITIAL", added=3), timeout=60)
    return deployment
