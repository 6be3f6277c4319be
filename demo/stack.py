"""Run a whole hooksync deployment locally: the Procfile's processes as child processes.

Used by ``make demo`` and the end-to-end tests. Each process gets its own process group so
that stopping the stack reaches gunicorn's and Celery's children too, and nothing outlives
the stack — including the embedded Redis when the stack started it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import requests

__all__ = ["Stack"]

REPO = Path(__file__).resolve().parent.parent

#: Procfile process name -> hooksync sub-command arguments.
PROCESSES = {
    "web": ["web", "--workers", "2"],
    "worker": ["worker", "--concurrency", "2"],
    "beat": ["beat"],
}


class Stack:
    def __init__(self, env: Mapping[str, str], *, log_dir: Path) -> None:
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO), self.env.get("PYTHONPATH")])
        )
        self.log_dir = log_dir
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.owns_redis = not self.env.get("HOOKSYNC_REDIS_URL")
        self.var_dir = Path(self.env.get("HOOKSYNC_VAR_DIR", "var")).resolve()
        host = self.env.get("HOOKSYNC_HOST", "127.0.0.1")
        self.base_url = f"http://{host}:{self.env.get('HOOKSYNC_PORT', '3003')}"

    def _hooksync(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "hooksync.cli", *args]

    def start(self, names: tuple[str, ...] = ("web", "worker", "beat")) -> Stack:
        """Migrate (the release step), then start the processes and wait for web to answer."""
        self.log_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        subprocess.run(self._hooksync("migrate"), env=self.env, cwd=REPO, check=True)
        for name in names:
            self.start_process(name)
        self.wait_healthy()
        return self

    def start_process(self, name: str) -> None:
        # Owner-only (0600): a process's log may name connections and events.
        fd = os.open(self.log_dir / f"{name}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        log = os.fdopen(fd, "ab")  # noqa: SIM115 - closed with the process
        self.processes[name] = subprocess.Popen(
            self._hooksync(*PROCESSES[name]),
            env=self.env,
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()  # the child has its own copy of the descriptor

    def wait_healthy(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {process.returncode}; "
                        f"see {self.log_dir / (name + '.log')}:\n{self.tail(name)}"
                    )
            try:
                if requests.get(f"{self.base_url}/healthz", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"web did not answer {self.base_url}/healthz within {timeout}s")

    def tail(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def stop_process(self, name: str, timeout: float = 15.0) -> None:
        process = self.processes.pop(name, None)
        if process is None:
            return
        _signal_group(process, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait(5)
        # Children (gunicorn and Celery pool processes) share the group: make sure they
        # went with their parent.
        _signal_group(process, signal.SIGKILL)

    def stop(self) -> None:
        # Beat first (no new work), then web (no new webhooks), then the worker finishes.
        for name in ("beat", "web", "worker", *list(self.processes)):
            self.stop_process(name)
        if self.owns_redis:
            from config.redis_server import stop_embedded_redis

            stop_embedded_redis(self.var_dir)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
