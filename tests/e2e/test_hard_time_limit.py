"""A script that ignores its soft time limit is killed by the hard one, in a real worker.

Real processes (gunicorn, a Celery worker, beat, the embedded Redis, SQLite) with a 2 s
soft and 5 s hard limit. The poll's script swallows the soft limit's exception and sleeps
on, so only Celery's hard limit can stop it: it kills the pool child. The run's lease then
runs out unrenewed, the sweeper queues it again, and its next claim ends it ``error`` with
a ``timeout`` description instead of running the script a second time; the app gets one
failure notification saying so, and the poll's slot is free for the next poll.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from demo.http_thread import ServerThread
from demo.stack import Stack
from tests.integration.test_execution import TOY_MODELS, TOY_PROVIDER, TOY_YAML
from tests.support.deployment import Deployment, new_fakes
from tests.support.integrations import extend_example_integrations
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e

#: Swallows every stop it is sent and sleeps on: only killing the process ends it.
STUBBORN_SCRIPT = """
import time


def fetch_data(nango):
    nango.log("about to hang")
    while True:
        try:
            time.sleep(3600)
        except BaseException:
            pass


def on_webhook_payload_received(nango, payload):
    pass
"""


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    api_key, signing_key, tracker, receiver = new_fakes()
    with tempfile.TemporaryDirectory(prefix="hooksync-hard-limit-") as folder:
        var = Path(folder) / "var"
        receiver_server = ServerThread(receiver.app).start()
        integrations = extend_example_integrations(
            Path(folder) / "integrations",
            syncs=TOY_YAML,
            models=TOY_MODELS,
            provider=TOY_PROVIDER,
            scripts={
                "toy/syncs/items.py": STUBBORN_SCRIPT,
                "toy/syncs/bare.py": "def fetch_data(nango):\n    pass\n",
            },
        )
        env = {
            "HOOKSYNC_VAR_DIR": str(var),
            "HOOKSYNC_INTEGRATIONS_DIR": str(integrations),
            "HOOKSYNC_REDIS_URL": "",
            "HOOKSYNC_DATABASE_URL": f"sqlite:///{var}/hooksync.db",
            "HOOKSYNC_PORT": str(free_port()),
            "HOOKSYNC_SECRET_KEY": api_key,
            "HOOKSYNC_WEBHOOK_SIGNING_KEY": signing_key,
            "HOOKSYNC_APP_WEBHOOK_URLS": f"{receiver_server.url}/hooks/hooksync",
            "HOOKSYNC_RUN_SOFT_LIMIT_SECONDS": "2",
            "HOOKSYNC_RUN_HARD_LIMIT_SECONDS": "5",
            "TOY_BASE_URL": "http://127.0.0.1:9",  # never called
            "TASKTRACKER_BASE_URL": "http://127.0.0.1:9",
            "TASKTRACKER_WEBHOOK_SECRET": "unused",
        }
        stack = Stack(env, log_dir=Path(folder) / "logs")
        try:
            stack.start()
            yield Deployment(stack, tracker, receiver, api_key, signing_key, env)
        except BaseException:
            for name in ("worker", "beat"):
                print(f"--- {name} log ---\n{stack.tail(name, 80)}")
            raise
        finally:
            stack.stop()
            receiver_server.stop()


@pytest.mark.timeout(180)
def test_a_script_ignoring_its_soft_limit_is_killed_and_its_run_ends_as_a_timeout(
    deployment: Deployment,
) -> None:
    api = deployment.url
    created = requests.post(
        f"{api}/connections",
        json={
            "provider_config_key": "toy",
            "connection_id": "c1",
            "credentials": {"type": "API_KEY", "api_key": "k"},
        },
        headers=deployment.auth(),
        timeout=10,
    )
    assert created.status_code == 201, created.text
    triggered = requests.post(
        f"{api}/sync/trigger",
        json={"provider_config_key": "toy", "connection_id": "c1", "syncs": ["items"]},
        headers=deployment.auth(),
        timeout=10,
    )
    assert triggered.status_code == 200, triggered.text

    failure = deployment.receiver.wait_for(
        lambda body: body.get("syncName") == "items" and not body.get("success"),
        timeout=90,
    )
    assert failure.body["error"]["type"] == "timeout", failure.body
    assert "hard time limit of 5 s" in failure.body["error"]["description"]
    log = deployment.stack.tail("worker", 400)
    assert "Hard time limit (5" in log, log  # Celery killed the child, not our soft limit

    status = requests.get(
        f"{api}/sync/status",
        params={"provider_config_key": "toy", "connection_id": "c1", "syncs": "items"},
        headers=deployment.auth(),
        timeout=10,
    )
    assert status.status_code == 200, status.text
    (sync,) = status.json()["syncs"]
    assert sync["status"] != "RUNNING", sync  # the poll's slot is free

    time.sleep(3)  # a second run of the script, or a second notification, would show now
    failures = [
        item
        for item in deployment.receiver.received
        if item.body.get("syncName") == "items" and not item.body.get("success")
    ]
    assert len(failures) == 1, [item.body for item in failures]
    assert deployment.stack.tail("worker", 400).count("about to hang") == 1
