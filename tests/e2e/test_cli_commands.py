"""Every operator command of ``hooksync`` run as an operator runs it: a subprocess with the
deployment's environment, against the running stack (issue 8's acceptance 2).

Each command's output is checked against what the API or the app receiver says happened,
and its exit status; the failures (an unknown connection, a bad time, a wrong key, no
server) must each be one line on stderr. ``hooksync up`` gets its own stacks below.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.deployment import Deployment
from tests.support.integrations import copy_example_integrations
from tests.support.notifications import notified
from tests.support.paths import REPO
from tests.support.processes import processes_using
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e


def hooksync(deployment: Deployment, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m hooksync.cli <args>`` with the deployment's environment (and ``env``)."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HOOKSYNC_")}
    environ.update({**deployment.env, **env})
    return subprocess.run(
        [sys.executable, "-m", "hooksync.cli", *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def one_line_failure(result: subprocess.CompletedProcess[str], status: int) -> str:
    """The single stderr line of a failed command (no traceback, nothing on stdout)."""
    assert result.returncode == status, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stdout == ""
    return result.stderr.strip()


def table(stdout: str) -> list[dict[str, str]]:
    """A printed table as rows keyed by header (columns are split on runs of 2+ spaces)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    headers = re.split(r"\s{2,}", lines[0].strip())
    starts = [lines[0].index(header) for header in headers]
    rows = []
    for line in lines[1:]:
        if line.startswith("more: "):
            continue
        bounds = [*starts[1:], None]
        rows.append(
            {
                header: line[start:end].strip()
                for header, start, end in zip(headers, starts, bounds, strict=True)
            }
        )
    return rows


def api(deployment: Deployment, path: str, **params: Any) -> Any:
    response = requests.get(
        f"{deployment.url}{path}", params=params, headers=deployment.auth(), timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()


def sync_status(deployment: Deployment) -> dict[str, Any]:
    (status,) = api(
        deployment,
        "/sync/status",
        provider_config_key="tasktracker",
        syncs="tasks",
        connection_id="acme",
    )["syncs"]
    return status


def test_status_shows_each_sync_of_the_connection(connected: Deployment) -> None:
    rows = table(ok(hooksync(connected, "status", "tasktracker", "--connection-id", "acme")))
    expected = sync_status(connected)
    assert len(rows) == 1
    assert rows[0]["CONNECTION"] == "acme"
    assert rows[0]["SYNC"] == "tasks"
    assert rows[0]["FREQUENCY"] == "every 1 day"
    assert rows[0]["RECORDS"] == f"Task={expected['recordCount']['Task']}"


def test_trigger_with_reset_runs_a_full_sync(connected: Deployment) -> None:
    mark = connected.receiver.mark()
    out = ok(hooksync(connected, "trigger", "tasktracker", "tasks", "--connection-id", "acme",
                      "--reset"))  # fmt: skip
    assert out == "triggered a full run of tasks for connection 'acme' of 'tasktracker'\n"
    connected.receiver.wait_for(notified("INITIAL"), timeout=60, after=mark)


def test_pause_and_start_change_the_sync_state(connected: Deployment) -> None:
    out = ok(hooksync(connected, "pause", "tasktracker", "tasks", "--connection-id", "acme"))
    assert out == "paused tasks for connection 'acme' of 'tasktracker'\n"
    deadline = time.monotonic() + 30  # a run in flight reads RUNNING until it ends
    while sync_status(connected)["status"] == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert sync_status(connected)["status"] == "PAUSED"

    out = ok(hooksync(connected, "start", "tasktracker", "*", "--connection-id", "acme"))
    assert out == "started every sync for connection 'acme' of 'tasktracker'\n"
    assert sync_status(connected)["status"] != "PAUSED"


def test_records_prints_a_page_and_its_cursor(connected: Deployment) -> None:
    out = ok(hooksync(connected, "records", "tasktracker", "Task", "--connection-id", "acme",
                      "--limit", "2"))  # fmt: skip
    page = connected.records(limit=2)
    rows = table(out)
    assert [row["ID"] for row in rows] == [record["id"] for record in page["records"]]
    assert all(row["ACTION"] in {"ADDED", "UPDATED", "DELETED"} for row in rows)
    assert page["records"][0]["title"] in out
    assert f"more: --cursor {page['next_cursor']}" in out


def test_webhooks_lists_an_event_with_its_runs_and_replays_it(connected: Deployment) -> None:
    mark = connected.receiver.mark()
    # An existing task: the shared stack's other tests count the tracker's three tasks.
    connected.tracker.update_task("T-3", title="Replay me from the CLI", notify=False)
    sent = connected.tracker.send_webhook("task.updated", "T-3")
    assert sent.status == 202
    connected.receiver.wait_for(notified("WEBHOOK"), timeout=60, after=mark)

    listed = json.loads(ok(hooksync(connected, "webhooks", "--integration", "tasktracker",
                                    "--since", "10m", "--json")))  # fmt: skip
    (event,) = [e for e in listed["events"] if e["delivery_id"] == sent.delivery_id]
    assert ("acme", "tasks") in [(run["connection_id"], run["sync_name"]) for run in event["runs"]]

    mark = connected.receiver.mark()
    out = ok(hooksync(connected, "webhooks", "--replay", event["id"]))
    assert re.fullmatch(
        rf"replayed event {event['id']} \(\w+\): [1-9]\d* run\(s\), \d+ .*\n", out
    ), out
    connected.receiver.wait_for(notified("WEBHOOK"), timeout=60, after=mark)


def test_notifications_lists_deliveries_and_retries(connected: Deployment) -> None:
    rows = table(ok(hooksync(connected, "notifications", "--connection-id", "acme",
                             "--state", "delivered", "--limit", "3")))  # fmt: skip
    assert rows and len(rows) <= 3
    assert {row["CONNECTION"] for row in rows} == {"acme"}
    assert {row["STATE"] for row in rows} == {"delivered"}
    assert {row["SYNC"] for row in rows} == {"tasks"}

    out = ok(hooksync(connected, "notifications", "--retry-failed", "--since", "1h"))
    assert re.fullmatch(r"retried \d+ failed notification\(s\): .+\n", out), out


def test_dryrun_prints_what_a_poll_would_save(connected: Deployment) -> None:
    out = ok(hooksync(connected, "dryrun", "tasktracker", "tasks", "acme", "--full"))
    assert "dry run of tasktracker/tasks for connection 'acme': INITIAL" in out
    assert "nothing was written" in out
    records = connected.records(limit=100)["records"]
    ids = {record["id"] for record in records if not record["_nango_metadata"]["deleted_at"]}
    assert ids and all(re.search(rf"\s{task_id}\s", out) for task_id in ids)


def test_failures_are_one_line_with_a_nonzero_status(connected: Deployment) -> None:
    line = one_line_failure(
        hooksync(connected, "status", "tasktracker", "--connection-id", "nobody"), 1
    )
    assert line == (
        "hooksync status: connection 'nobody' not found in integration 'tasktracker' "
        "[field connection_id] (HTTP 404)"
    )

    line = one_line_failure(hooksync(connected, "webhooks", "--since", "yesterday"), 2)
    assert line.startswith("hooksync webhooks: --since: expected an ISO-8601 time")
    assert "'yesterday'" in line

    line = one_line_failure(hooksync(connected, "notifications", "--retry-failed"), 2)
    assert line.startswith("hooksync notifications: --retry-failed needs --since")

    wrong = "wrong-key-" + connected.api_key[:4]
    result = hooksync(
        connected, "records", "tasktracker", "Task", "--connection-id", "acme",
        HOOKSYNC_SECRET_KEY=wrong,
    )  # fmt: skip
    line = one_line_failure(result, 1)
    assert line.startswith("hooksync records: the API key was refused: set HOOKSYNC_SECRET_KEY")
    assert wrong not in line

    down = f"http://127.0.0.1:{free_port()}"
    line = one_line_failure(hooksync(connected, "webhooks", HOOKSYNC_URL=down), 1)
    assert line == (
        f"hooksync webhooks: cannot reach hooksync at {down} (is `hooksync web` running? "
        "set HOOKSYNC_URL)"
    )


# -- hooksync up ------------------------------------------------------------------------------


@pytest.fixture
def up_env() -> Iterator[dict[str, str]]:
    """A fresh var dir, port and copy of the example integration for one ``hooksync up``."""
    with tempfile.TemporaryDirectory(prefix="hooksync-up-") as folder:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("HOOKSYNC_")}
        environ.update(
            {
                "HOOKSYNC_VAR_DIR": str(Path(folder) / "var"),
                "HOOKSYNC_INTEGRATIONS_DIR": str(
                    copy_example_integrations(Path(folder) / "integrations", runs="every 1 day")
                ),
                "HOOKSYNC_PORT": str(free_port()),
                "HOOKSYNC_TICK_SECONDS": "1",
                "WEB_CONCURRENCY": "1",
                "TASKTRACKER_BASE_URL": "http://127.0.0.1:9",
                "TASKTRACKER_WEBHOOK_SECRET": "webhook-secret",
                "PYTHONUNBUFFERED": "1",
            }
        )
        yield environ
        var_dir = Path(environ["HOOKSYNC_VAR_DIR"])
        for process in processes_using(var_dir):  # only after a failed test
            process.kill()


def start_up(env: dict[str, str], *args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "hooksync.cli", "up", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_healthy(env: dict[str, str], process: subprocess.Popen[str]) -> None:
    url = f"http://127.0.0.1:{env['HOOKSYNC_PORT']}/healthz"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} did not answer")


@pytest.mark.timeout(240)
def test_up_runs_the_procfile_and_ctrl_c_stops_every_process(
    up_env: dict[str, str], tmp_path: Path
) -> None:
    var_dir = Path(up_env["HOOKSYNC_VAR_DIR"])
    process = start_up(up_env, cwd=tmp_path)  # no ./Procfile: the built-in list
    try:
        wait_healthy(up_env, process)
        names = {" ".join(p.cmdline()) for p in processes_using(var_dir)}
        assert any("gunicorn" in c for c in names), names
        assert any("celery" in c and " worker" in c for c in names), names
        assert any("celery" in c and " beat" in c for c in names), names
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, out + err
    # Every line is a process's, under its name (the worker may not have said anything yet).
    prefixed = re.compile(r"^(release|web|worker|beat|up) +\| ")
    assert all(prefixed.match(line) for line in out.splitlines()), out
    assert {line.split(" | ", 1)[0].strip() for line in out.splitlines()} >= {
        "release",
        "web",
        "up",
    }, out
    assert re.search(r"^release +\| hooksync: database is migrated", out, re.M), out
    assert "up      | SIGINT: stopping every process" in out
    assert processes_using(var_dir) == []


@pytest.mark.timeout(240)
def test_up_stops_everything_when_one_process_exits(up_env: dict[str, str], tmp_path: Path) -> None:
    var_dir = Path(up_env["HOOKSYNC_VAR_DIR"])
    procfile = tmp_path / "Procfile.test"
    procfile.write_text(
        "release: hooksync migrate\n"
        "web: hooksync web\n"
        f"oops: {sys.executable} -c 'import time, sys; time.sleep(1); sys.exit(3)'\n"
    )
    process = start_up(up_env, "--procfile", str(procfile), cwd=tmp_path)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1, out + err
    assert err.strip().splitlines()[-1] == "hooksync up: oops exited with status 3"
    assert "oops exited with status 3; stopping the others" in out
    assert processes_using(var_dir) == []
