"""Logs (issue 8): one webhook followed by its event id through every process's JSON log,
and no secret in any log.

The ``deployment`` fixture runs the stack with ``HOOKSYNC_LOG_FORMAT=json`` and each
process writing its own file under the stack's log dir (web, worker, beat).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.deployment import Deployment
from tests.support.notifications import notified

pytestmark = pytest.mark.e2e

#: The keys every JSON line has.
FIXED_KEYS = {"ts", "level", "logger", "message"}

Lines = dict[str, list[dict[str, Any]]]


def test_grep_event_id_shows_one_webhooks_whole_path(connected: Deployment) -> None:
    mark = connected.receiver.mark()
    connected.tracker.update_task("T-2", title="Fix the login redirect", notify=False)
    event_id = _send_webhook(connected, "task.updated", "T-2")
    connected.receiver.wait_for(notified("WEBHOOK", updated=1), after=mark)

    # The delivery line is written after the app answered: wait until it is in the file.
    lines = _wait_for_lines(
        connected, event_id, lambda found: any(_is_delivery(line) for line in found["worker"])
    )

    # web: the receiver's line and the access line, both with the event id as a field.
    web = lines["web"]
    [received] = [line for line in web if line["message"].startswith("webhook received")]
    assert received["integration"] == "tasktracker"
    [access] = [line for line in web if line["logger"] == "gunicorn.access"]
    assert (access["method"], access["path"], access["status"]) == (
        "POST",
        "/webhook/tasktracker",
        202,
    )
    assert access["request_id"] == received["request_id"]

    # worker: routed to connection acme, sync tasks, as run R; R executed and merged; the
    # notification of R delivered. Every one of these lines names the event.
    worker = lines["worker"]
    [routed] = [line for line in worker if line["message"].startswith("webhook routed to")]
    assert (routed["connection_id"], routed["integration"], routed["sync"]) == (
        "acme",
        "tasktracker",
        "tasks",
    )
    run_id = routed["run_id"]
    assert isinstance(run_id, int)
    [executed] = [line for line in worker if line["message"] == f"run {run_id} executed: success"]
    assert (executed["run_id"], executed["connection_id"], executed["sync"]) == (
        run_id,
        "acme",
        "tasks",
    )
    [merged] = [line for line in worker if line["message"].startswith(f"run {run_id} merged")]
    assert (merged["model"], merged["added"], merged["updated"], merged["deleted"]) == (
        "Task",
        0,
        1,
        0,
    )
    [delivered] = [line for line in worker if _is_delivery(line)]
    assert delivered["run_id"] == run_id
    assert delivered["status"] == 200
    assert isinstance(delivered["notification_id"], int)
    app_url = connected.env["HOOKSYNC_APP_WEBHOOK_URLS"]
    assert delivered["url"] == app_url  # this URL has no credentials to redact

    # beat never handles a webhook: its log has no line of it.
    assert lines["beat"] == []


def test_no_secret_reaches_any_log(connected: Deployment) -> None:
    # A full flow first (connection with credentials, a signed webhook, a notification
    # signed with the app key), so every process had the chance to log each secret.
    mark = connected.receiver.mark()
    connected.tracker.update_task("T-1", status="doing", notify=False)
    _send_webhook(connected, "task.updated", "T-1")
    connected.receiver.wait_for(notified("WEBHOOK", updated=1), after=mark)
    # A request with a bad key too: its Authorization header must not be logged either.
    refused = requests.get(
        f"{connected.url}/connections",
        headers={"Authorization": "Bearer not-the-key-but-looks-secret"},
        timeout=10,
    )
    assert refused.status_code == 401

    var_dir = Path(connected.env["HOOKSYNC_VAR_DIR"])
    generated = json.loads((var_dir / "secrets.json").read_text())
    secrets = {
        "the API key": connected.api_key,
        "the app signing key": connected.signing_key,
        "the provider webhook secret": connected.tracker.webhook_secret,
        "the connection's API token": connected.tracker.api_token,
        "the encryption key": generated["encryption_key"],
        "a caller's Authorization header": "not-the-key-but-looks-secret",
    }
    logs = {path.name: path.read_text(errors="replace") for path in _log_files(connected)}
    assert set(logs) >= {"web.log", "worker.log", "beat.log"}
    assert all(logs.values())  # the check below must have something to search
    leaks = [
        f"{what} in {name}"
        for what, secret in secrets.items()
        for name, text in logs.items()
        if secret in text
    ]
    assert leaks == []


def test_every_log_line_of_the_stack_is_one_json_object(connected: Deployment) -> None:
    problems = []
    for path in _log_files(connected):
        for number, text in enumerate(path.read_text(errors="replace").splitlines(), 1):
            try:
                line = json.loads(text)
            except json.JSONDecodeError:
                problems.append(f"{path.name}:{number}: {text[:200]}")
                continue
            if not isinstance(line, dict) or not FIXED_KEYS <= set(line):
                problems.append(f"{path.name}:{number}: missing keys: {text[:200]}")
    assert problems == []


def _send_webhook(deployment: Deployment, event: str, task_id: str) -> str:
    """Send a signed tracker webhook; the event id the receiver answered with."""
    tracker = deployment.tracker
    body = json.dumps(
        {"event": event, "task_id": task_id, "workspace_id": tracker.workspace_id}
    ).encode()
    response = requests.post(
        f"{deployment.url}/webhook/tasktracker",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Tracker-Event": event,
            "X-Tracker-Delivery": f"logs-{time.time_ns()}",
            "X-Tracker-Signature": tracker.sign(body),
        },
        timeout=10,
    )
    assert response.status_code == 202, response.text
    event_id = response.json()["id"]
    assert isinstance(event_id, str) and event_id
    return event_id


def _log_files(deployment: Deployment) -> list[Path]:
    return sorted(deployment.stack.log_dir.glob("*.log"))


def _grep(deployment: Deployment, needle: str) -> Lines:
    """Every line containing ``needle``, per process, parsed: each must be JSON with the
    fixed keys and carry ``needle`` as its ``event_id`` field, not only in its text."""
    found: Lines = {}
    for path in _log_files(deployment):
        parsed = []
        for text in path.read_text(errors="replace").splitlines():
            if needle not in text:
                continue
            line = json.loads(text)
            assert FIXED_KEYS <= set(line), text
            assert line.get("event_id") == needle, text
            parsed.append(line)
        found[path.stem] = parsed
    return found


def _wait_for_lines(
    deployment: Deployment, event_id: str, done: Callable[[Lines], bool], timeout: float = 30.0
) -> Lines:
    deadline = time.monotonic() + timeout
    while True:
        lines = _grep(deployment, event_id)
        if done(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def _is_delivery(line: dict[str, Any]) -> bool:
    message = line["message"]
    return message.startswith("notification ") and "delivered" in message
