"""A production install: `pip install .` (no extras) runs every process of the Procfile.

The test builds a fresh virtualenv with the same Python, installs hooksync from a copy of the
working tree the way an operator does (no ``-e``, no ``dev`` extra), and runs ``hooksync
migrate``, ``web``, ``worker`` and ``beat`` from that venv's ``bin`` with the working
directory outside the repository and no ``PYTHONPATH``: only what the wheel ships and
declares is there. One signed webhook then goes all the way to the app.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from config.redis_server import stop_embedded_redis
from demo.app_receiver import AppReceiver
from demo.http_thread import ServerThread
from tests.support.auth import bearer
from tests.support.notifications import notified
from tests.support.paths import REPO
from tests.support.processes import processes_using
from tests.support.servers import free_port, skip_or_fail

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

#: Not part of what `pip install .` builds from; copying them would only cost time (and a
#: stale ``build/`` from an earlier in-tree build could leak deleted modules into the wheel).
_NOT_SOURCE = shutil.ignore_patterns(
    ".*", "var", "build", "dist", "node_modules", "__pycache__", "*.egg-info"
)

PIP_TIMEOUT_SECONDS = 240


@pytest.fixture(scope="module")
def workspace() -> Iterator[Path]:
    """A temp folder holding the venv, the run's var dir and integrations; removed after."""
    with tempfile.TemporaryDirectory(prefix="hooksync-install-") as folder:
        yield Path(folder)


@pytest.fixture(scope="module")
def venv(workspace: Path) -> Path:
    """A virtualenv with ``pip install <hooksync>`` and nothing else; its ``bin`` folder."""
    source = workspace / "source"
    # Built from a copy: an in-tree build writes build/ and *.egg-info into the repository,
    # and two test runs at once would race on them.
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    env = _clean_env()
    folder = workspace / "venv"
    steps = [
        [sys.executable, "-m", "venv", str(folder)],
        [str(folder / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
         str(source)],
    ]  # fmt: skip
    for command in steps:
        try:
            result = subprocess.run(
                command,
                env=env,
                cwd=workspace,
                capture_output=True,
                text=True,
                timeout=PIP_TIMEOUT_SECONDS,
            )
        except subprocess.TimeoutExpired:
            skip_or_fail(f"{' '.join(command[-3:])} took over {PIP_TIMEOUT_SECONDS}s")
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()[-3000:]
            skip_or_fail(f"cannot build the plain install ({' '.join(command[-3:])}):\n{output}")
    return folder / "bin"


def _clean_env() -> dict[str, str]:
    """The test's environment without hooksync settings and without the repository's path."""
    dropped = ("HOOKSYNC_", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
    return {k: v for k, v in os.environ.items() if not k.startswith(dropped)}


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _stop(process: subprocess.Popen[bytes]) -> None:
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        _signal_group(process, signal.SIGKILL)
        process.wait(5)
    # gunicorn's and Celery's children share the group: make sure they went too.
    _signal_group(process, signal.SIGKILL)


def test_plain_install_runs_every_process_and_delivers_a_webhook(
    venv: Path, workspace: Path
) -> None:
    run_dir = workspace / "run"  # the processes' working directory, outside the repository
    var_dir = run_dir / "var"
    integrations = shutil.copytree(REPO / "bench" / "integration", run_dir / "integrations")
    logs = run_dir / "logs"
    logs.mkdir()
    api_key, signing_key = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    webhook_secret = secrets.token_urlsafe(16)
    receiver = AppReceiver(signing_key)
    receiver_server = ServerThread(receiver.app).start()
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **_clean_env(),
        "HOOKSYNC_VAR_DIR": str(var_dir),  # SQLite and the embedded Redis live here
        "HOOKSYNC_INTEGRATIONS_DIR": str(integrations),
        "HOOKSYNC_PORT": str(port),
        "HOOKSYNC_SECRET_KEY": api_key,
        "HOOKSYNC_WEBHOOK_SIGNING_KEY": signing_key,
        "HOOKSYNC_APP_WEBHOOK_URLS": f"{receiver_server.url}/hooks/hooksync",
        "HOOKSYNC_TICK_SECONDS": "1",
        "BENCH_WEBHOOK_SECRET": webhook_secret,
        "PYTHONUNBUFFERED": "1",
    }
    processes: dict[str, subprocess.Popen[bytes]] = {}

    def tails() -> str:
        parts = []
        for path in sorted(logs.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-60:]
            parts.append(f"--- {path.name} ---\n" + "\n".join(lines))
        return "\n".join(parts)

    try:
        # The installed package is what runs, not the repository's folders.
        where = subprocess.run(
            [str(venv / "python"), "-c", "import config, workers; print(config.__file__)"],
            env=env, cwd=run_dir, capture_output=True, text=True, check=True,
        )  # fmt: skip
        assert where.stdout.strip().startswith(str(venv.parent)), where.stdout

        migrated = subprocess.run(
            [str(venv / "hooksync"), "migrate"],
            env=env, cwd=run_dir, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr

        for name, args in {
            "web": ["web", "--workers", "1"],
            "worker": ["worker", "--concurrency", "2"],
            "beat": ["beat"],
        }.items():
            with open(logs / f"{name}.log", "wb") as log:
                processes[name] = subprocess.Popen(
                    [str(venv / "hooksync"), *args],
                    env=env,
                    cwd=run_dir,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group, stopped as one
                )

        deadline = time.monotonic() + 60
        while True:
            for name, process in processes.items():
                assert process.poll() is None, f"{name} exited with {process.returncode}"
            try:
                if requests.get(f"{base_url}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "web did not answer /healthz within 60s"
            time.sleep(0.1)

        auth = bearer(api_key)
        created = requests.post(
            f"{base_url}/connections",
            json={
                "provider_config_key": "bench",
                "connection_id": "acct-1",
                "credentials": {"type": "NONE"},
            },
            headers=auth,
            timeout=10,
        )
        assert created.status_code == 201, created.text

        body = json.dumps({"account": "acct-1", "item_id": "i-1", "seq": 1, "sent_at": 0})
        signature = hmac.new(webhook_secret.encode(), body.encode(), hashlib.sha256).hexdigest()
        sent = requests.post(
            f"{base_url}/webhook/bench",
            data=body,
            headers={
                "Content-Type": "application/json",
                "X-Bench-Signature": f"sha256={signature}",
                "X-Bench-Event": "item.updated",
                "X-Bench-Delivery": secrets.token_hex(8),
            },
            timeout=10,
        )
        assert sent.status_code == 202, sent.text

        notification = receiver.wait_for(notified("WEBHOOK", added=1), timeout=60)
        assert notification.signature_ok
        assert notification.body["connectionId"] == "acct-1"
        assert notification.body["providerConfigKey"] == "bench"
        assert notification.body["syncName"] == "items"
        assert notification.body["model"] == "Item"

        records = requests.get(
            f"{base_url}/records",
            params={"model": "Item"},
            headers={**auth, "Connection-Id": "acct-1", "Provider-Config-Key": "bench"},
            timeout=10,
        )
        assert records.status_code == 200, records.text
        [record] = records.json()["records"]
        assert (record["id"], record["account"], record["seq"]) == ("i-1", "acct-1", 1)
        assert record["_nango_metadata"]["last_action"] == "ADDED"
    except BaseException:
        print(tails())
        raise
    finally:
        # Beat first (no new work), then web (no new webhooks), then the worker.
        for name in ("beat", "web", "worker"):
            if name in processes:
                _stop(processes[name])
        stop_embedded_redis(var_dir)
        receiver_server.stop()

    # Nothing outlives the test: no gunicorn or Celery child, no embedded Redis.
    deadline = time.monotonic() + 10
    while (left := processes_using(var_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"left running: {[(p.pid, p.name()) for p in left]}"
