"""``hooksync up``: every process of the Procfile in the foreground, for a single machine.

The release step (``migrate``) runs first and must succeed; then ``web``, ``worker`` and
``beat`` run side by side, each line of their output prefixed with the process's name.
Ctrl-C or SIGTERM stops them all; one of them exiting on its own stops the others and
``up`` exits with status 1 naming it. Each child runs in a process group of its own, so
stopping it reaches gunicorn's and Celery's children too, and nothing outlives ``up``:
with the embedded Redis (``HOOKSYNC_REDIS_URL`` unset) ``up`` starts it first and stops it
last, unless it was already running.

The processes are read from ``./Procfile`` when there is one, else the built-in list
(the Procfile hooksync ships). A command starting with ``hooksync`` runs with this
Python (``python -m hooksync.cli``), so ``up`` works without ``hooksync`` on ``PATH``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import FrameType
from typing import IO, Any

from config.errors import ConfigError
from config.settings import load_settings

__all__ = ["BUILT_IN", "add_command", "read_procfile", "run_up"]

#: The Procfile hooksync ships: process name -> command line.
BUILT_IN: dict[str, str] = {
    "release": "hooksync migrate",
    "web": "hooksync web",
    "worker": "hooksync worker",
    "beat": "hooksync beat",
}

#: The Procfile entry run to completion before the others (Heroku's name for it).
RELEASE = "release"

#: Seconds a process gets to stop after SIGTERM before its group is killed.
STOP_TIMEOUT = 15.0

#: Stop order: no new work (beat), no new webhooks (web), then the worker finishes.
_STOP_FIRST = ("beat", "web", "worker")


def read_procfile(path: Path) -> dict[str, str]:
    """The processes of a Procfile, in file order (``name: command`` lines).

    Raises:
        ConfigError: A line is not ``name: command``, or a name repeats.
    """
    processes: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        name, colon, command = text.partition(":")
        name, command = name.strip(), command.strip()
        if (
            not colon
            or not name
            or not command
            or not name.replace("_", "").replace("-", "").isalnum()
        ):
            raise ConfigError(f"{path}:{number}: expected 'name: command', got {line!r}")
        if name in processes:
            raise ConfigError(f"{path}:{number}: process {name!r} is listed twice")
        processes[name] = command
    if not processes:
        raise ConfigError(f"{path} lists no process")
    return processes


def command_line(command: str) -> list[str]:
    """The argument list of a Procfile command; ``hooksync`` runs with this Python."""
    argv = shlex.split(command)
    if argv and argv[0] == "hooksync":
        return [sys.executable, "-m", "hooksync.cli", *argv[1:]]
    return argv


class _Output:
    """Copies each child's output to stdout, a line at a time, prefixed with its name."""

    def __init__(self, names: list[str]) -> None:
        self._width = max(len(name) for name in names)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def say(self, name: str, line: str) -> None:
        with self._lock:
            sys.stdout.write(f"{name.ljust(self._width)} | {line.rstrip()}\n")
            sys.stdout.flush()

    def follow(self, name: str, stream: IO[bytes]) -> None:
        thread = threading.Thread(target=self._copy, args=(name, stream), daemon=True)
        thread.start()
        self._threads.append(thread)

    def _copy(self, name: str, stream: IO[bytes]) -> None:
        with stream:
            for raw in iter(stream.readline, b""):
                self.say(name, raw.decode("utf-8", errors="replace"))

    def drain(self) -> None:
        for thread in self._threads:
            thread.join(timeout=5)


def run_up(processes: Mapping[str, str], env: Mapping[str, str]) -> int:
    """Run the release step, then the other processes until one exits or a signal comes.

    Returns:
        0 after Ctrl-C/SIGTERM; the release step's status if it failed; 1 when a process
        exited on its own.
    """
    output = _Output(list(processes) + ["up"])
    child_env = {**env, "PYTHONUNBUFFERED": "1"}
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    children: dict[str, subprocess.Popen[bytes]] = {}
    try:
        if RELEASE in processes:
            release = _spawn(RELEASE, processes[RELEASE], child_env, output)
            children[RELEASE] = release
            while release.poll() is None and not stop.wait(0.1):
                pass
            if stop.is_set():
                return 0
            del children[RELEASE]
            if release.returncode != 0:
                output.say("up", f"{RELEASE} failed with status {release.returncode}; not starting")
                return release.returncode or 1
        for name, command in processes.items():
            if name != RELEASE:
                children[name] = _spawn(name, command, child_env, output)
        exited = None
        while exited is None and not stop.wait(0.2):
            exited = next((n for n, p in children.items() if p.poll() is not None), None)
        if exited is not None:
            status = children[exited].returncode
            output.say("up", f"{exited} exited with status {status}; stopping the others")
            print(f"hooksync up: {exited} exited with status {status}", file=sys.stderr)
            return 1
        output.say("up", f"{signal.Signals(received[0]).name}: stopping every process")
        return 0
    finally:
        _stop_all(children, output)
        output.drain()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def add_command(commands: Any) -> None:
    """Add ``up`` to the ``hooksync`` parser's sub-commands."""
    parser = commands.add_parser(
        "up",
        help="run every Procfile process in the foreground (one machine)",
        description=(
            "Run the release step (migrate), then web, worker and beat in the foreground, "
            "their output prefixed with their names; Ctrl-C stops them all. Reads ./Procfile "
            "when present, else the built-in list."
        ),
    )
    parser.add_argument(
        "--procfile", type=Path, help="the Procfile to run (default: ./Procfile if present)"
    )
    parser.set_defaults(handler=_up)


def _up(args: argparse.Namespace) -> int:
    if args.procfile is not None and not args.procfile.is_file():
        raise ConfigError(f"--procfile: no file {str(args.procfile)!r}")
    procfile = args.procfile or Path("Procfile")
    processes = read_procfile(procfile) if procfile.is_file() else dict(BUILT_IN)
    settings = load_settings()  # a bad variable stops here, once, not in four processes
    started_redis = False
    if settings.redis_url is None:
        # Started here, not by the first child, so up owns it and stops it at the end.
        # Imported here as in hooksync.cli: it needs the redis client, whose absence the
        # processes' own start-up check names as an installation problem.
        from config.redis_server import embedded_redis_url, ensure_embedded_redis

        started_redis = not _redis_answers(embedded_redis_url(settings.var_dir))
        ensure_embedded_redis(settings.var_dir)
    try:
        return run_up(processes, os.environ)
    finally:
        if started_redis:
            from config.redis_server import stop_embedded_redis

            stop_embedded_redis(settings.var_dir)


def _redis_answers(url: str) -> bool:
    # Imported here like in hooksync.cli: the redis client is checked by each process first.
    import redis

    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _spawn(
    name: str, command: str, env: Mapping[str, str], output: _Output
) -> subprocess.Popen[bytes]:
    argv = command_line(command)
    output.say("up", f"starting {name}: {command}")
    try:
        process = subprocess.Popen(
            argv,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: Ctrl-C is ours to forward, to all of it
        )
    except OSError as error:
        raise ConfigError(f"cannot start {name} ({command!r}): {error.strerror or error}") from None
    assert process.stdout is not None
    output.follow(name, process.stdout)
    return process


def _stop_all(children: dict[str, subprocess.Popen[bytes]], output: _Output) -> None:
    order = [n for n in _STOP_FIRST if n in children] + [
        n for n in children if n not in _STOP_FIRST
    ]
    for name in order:
        _signal_group(children[name], signal.SIGTERM)
    for name in order:
        process = children[name]
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            output.say("up", f"{name} did not stop within {STOP_TIMEOUT:.0f}s; killing it")
            _signal_group(process, signal.SIGKILL)
            process.wait(5)
        # Children of the process (gunicorn workers, the Celery pool) share its group.
        _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
