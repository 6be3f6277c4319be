"""The deployment under test: the Procfile's processes as separate "machines".

Built on ``bench.scale.Cluster`` (each process its own ``HOOKSYNC_VAR_DIR`` and process
group; one Postgres, one Redis): web ×2 (the load alternates, as behind a load balancer),
beat ×1, worker ×2 with distinct node names, started as ``hooksync worker`` execs Celery,
plus ``-n``. What chaos adds is the means to kill each of them with ``kill -9`` and to bring
it back as a supervisor would:

* a worker or web: ``killpg(SIGKILL)`` of its process group (the parent and its pool or
  gunicorn children at once), then the same command again;
* the embedded Redis: ``kill -9`` of the pid in its pid file, then
  ``config.redis_server.ensure_embedded_redis`` on the same folder — what every hooksync
  process calls when ``HOOKSYNC_REDIS_URL`` is unset — which starts it again on its AOF;
* Postgres: ``pg_ctl stop -m immediate`` (a crash: no checkpoint, clients cut off), then
  ``pg_ctl start`` on the same data folder and port.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import requests

from bench.scale import Cluster
from config.redis_server import ensure_embedded_redis
from demo.stack import REPO
from tests.support.servers import PostgresServer

__all__ = ["ChaosCluster", "RestartablePostgres"]

INTEGRATION_DIR = Path(__file__).resolve().parent / "integration"
WORKERS = ("worker1", "worker2")
WEBS = ("web1", "web2")


class RestartablePostgres(PostgresServer):
    """``tests.support.servers.PostgresServer`` that can crash and come back on its port.

    The tests' server trades durability for speed (``fsync=off``, ``synchronous_commit=off``):
    a crash would lose commits hooksync was told were durable, which no production database
    does. So it is restarted at once with the durable defaults, before anything uses it.
    """

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self._run([self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop"])
        self.start_again()

    def crash(self) -> None:
        self._run([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"])

    def start_again(self) -> None:
        # Same port and socket folder as PostgresServer, durable settings.
        self._run(
            [
                self.pg_ctl, "-D", str(self.data), "-l", str(self.folder / "postgres.log"), "-w",
                "-o", f"-p {self.port} -k {self.folder} -h 127.0.0.1 -c max_connections=200",
                "start",
            ]
        )  # fmt: skip


class ChaosCluster(Cluster):
    """web ×2, beat, worker ×2 on one Postgres and the embedded Redis, against the fakes."""

    def __init__(
        self,
        root: Path,
        database_url: str,
        *,
        connections: int,
        api_url: str,
        app_url: str,
        signing_key: str,
        tick_seconds: float,
    ) -> None:
        args = SimpleNamespace(connections=connections, concurrency=2, delay=0.0)
        super().__init__(root, database_url, args)  # type: ignore[arg-type]
        self.api_url = api_url
        self.app_url = app_url
        self.signing_key = signing_key
        self.tick_seconds = tick_seconds

    # -- start ----------------------------------------------------------------------------

    def start(self) -> None:
        redis_url = ensure_embedded_redis(self.redis_var)
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "HOOKSYNC_REDIS_URL": redis_url,
            "HOOKSYNC_DATABASE_URL": self.database_url,
            "HOOKSYNC_SECRET_KEY": self.api_key,
            # One key for every machine, as an operator deploys it (else each generates its own).
            "HOOKSYNC_ENCRYPTION_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
            "HOOKSYNC_WEBHOOK_SIGNING_KEY": self.signing_key,
            "HOOKSYNC_APP_WEBHOOK_URLS": self.app_url,
            "HOOKSYNC_TICK_SECONDS": str(self.tick_seconds),
            "HOOKSYNC_INTEGRATIONS_DIR": str(INTEGRATION_DIR),
            "CHAOS_WEBHOOK_SECRET": self.secret,
            "CHAOS_API_URL": self.api_url,
        }
        for name in ("HOOKSYNC_RUN_LEASE_SECONDS", "HOOKSYNC_LEASE_SECONDS"):
            self.env.pop(name, None)  # the defaults are what is shown
        subprocess.run(
            [sys.executable, "-m", "hooksync.cli", "migrate"],
            env=self.machine_env("release"),
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        for name in WEBS:
            self.start_web(name)
        self.spawn("beat", [sys.executable, "-m", "hooksync.cli", "beat"], self.machine_env("beat"))
        for name in WORKERS:
            self.start_worker(name)
        self.create_connections()

    def web_port(self, name: str) -> int:
        return self.web_ports[WEBS.index(name)]

    def start_web(self, name: str) -> None:
        env = self.machine_env(name, HOOKSYNC_PORT=str(self.web_port(name)))
        self.spawn(name, [sys.executable, "-m", "hooksync.cli", "web", "--workers", "2"], env)
        # Only this web: another process that exited meanwhile is the suite's finding to
        # record and restart (``Chaos.restart_dead``), not a reason to stop the run.
        self.wait_healthy(self.web_port(name), name=name)

    def start_worker(self, name: str) -> None:
        """One worker machine, as ``hooksync worker`` would exec it, plus ``-n``."""
        env = self.machine_env(name)
        metrics = Path(env["HOOKSYNC_VAR_DIR"]) / "metrics"
        metrics.mkdir(mode=0o700, exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
        self.spawn(
            name,
            [sys.executable, "-m", "celery", "-A", "hooksync.tasks", "worker",
             "-n", f"{name}@%h", "--concurrency", "2",
             "--loglevel", "INFO", "--without-gossip", "--without-mingle"],
            env,
        )  # fmt: skip

    def create_connections(self, provider_config_key: str = "chaos") -> None:
        super().create_connections(provider_config_key)

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """The public API on whichever web answers."""
        headers = {"Authorization": f"Bearer {self.api_key}", **kwargs.pop("headers", {})}
        error: Exception | None = None
        for port in self.web_ports:
            try:
                return requests.request(
                    method, f"http://127.0.0.1:{port}{path}", headers=headers, timeout=30, **kwargs
                )
            except requests.RequestException as exc:
                error = exc
        raise RuntimeError(f"{method} {path}: no web answered ({error})")

    # -- faults ---------------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """``kill -9`` of a process's whole group; it is forgotten until restarted."""
        process = self.processes.pop(name)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)

    def redis_pid(self) -> int:
        return int((self.redis_var / "redis" / "redis.pid").read_text().strip())

    def kill_redis(self) -> None:
        pid = self.redis_pid()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)  # a daemon, not our child: gone once kill(0) fails
            except ProcessLookupError:
                return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server {pid} survived kill -9")

    def restart_redis(self) -> None:
        ensure_embedded_redis(self.redis_var)

    def dead(self) -> list[str]:
        """Processes that exited on their own (a bug: only the driver kills them)."""
        return [name for name, process in self.processes.items() if process.poll() is not None]
