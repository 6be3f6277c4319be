"""The fault injector: each fault breaks one part of the deployment, then repairs it.

A fault's window is from the moment it starts breaking to the moment the repair returned
(the process restarted, the server answering again, the endpoint recovered); recovery time
is measured from the window's end. ``run_all`` runs faults one after another, then several at
once, each in its own thread, and returns their windows.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench.chaos.app_receiver import AppReceiver
from bench.chaos.cluster import WEBS, WORKERS, ChaosCluster
from bench.chaos.fake_api import FakeAPI

__all__ = ["Fault", "Window", "run_overlapping"]


@dataclass
class Window:
    name: str
    started: float  # time.time()
    ended: float = 0.0
    notes: list[str] = field(default_factory=list)


class Fault:
    name = "fault"

    def inject(self, window: Window) -> None:
        raise NotImplementedError

    def run(self) -> Window:
        window = Window(self.name, time.time())
        self.inject(window)
        window.ended = time.time()
        return window


@dataclass
class WorkerKills(Fault):
    """``kill -9`` of a random worker every ``interval`` seconds, restarted after ``down``."""

    cluster: ChaosCluster
    kills: int
    interval: float
    #: Called with the victim and the time of the kill, right after it (takeover snapshot).
    on_kill: Callable[[str, float], None]
    down: float = 1.0
    seed: int = 0
    name: str = "kill -9 worker"

    def inject(self, window: Window) -> None:
        pick = random.Random(self.seed)
        for number in range(self.kills):
            if number:
                time.sleep(self.interval)
            victim = pick.choice(WORKERS)
            self.cluster.kill(victim)
            self.on_kill(victim, time.time())
            time.sleep(self.down)
            self.cluster.start_worker(victim)  # as a supervisor would
            window.notes.append(victim)


@dataclass
class RedisKill(Fault):
    cluster: ChaosCluster
    down: float = 3.0
    name: str = "kill -9 Redis"

    def inject(self, window: Window) -> None:
        self.cluster.kill_redis()
        time.sleep(self.down)
        self.cluster.restart_redis()


@dataclass
class DatabaseDown(Fault):
    cluster: ChaosCluster
    stop: Callable[[], None]
    start: Callable[[], None]
    down: float = 10.0
    name: str = "database down"

    def inject(self, window: Window) -> None:
        self.stop()
        time.sleep(self.down)
        self.start()


@dataclass
class AppOutage(Fault):
    """The app's endpoint refuses connections, then answers 503, then 429, then recovers."""

    receiver: AppReceiver
    each: float = 1.2
    name: str = "app refuse/503/429"

    def inject(self, window: Window) -> None:
        for mode in ("refuse", "503", "429"):
            self.receiver.set_mode(mode)
            time.sleep(self.each)
        self.receiver.set_mode("ok")


@dataclass
class ApiBurst(Fault):
    """The external API answers 429 (``Retry-After: 1``), then 503, then 500, then recovers."""

    api: FakeAPI
    each: float = 1.5
    name: str = "external API 429/5xx"

    def inject(self, window: Window) -> None:
        before = self.api.faulted_requests
        for status in (429, 503, 500):
            self.api.fail_with(status)
            time.sleep(self.each)
        self.api.fail_with(None)
        window.notes.append(f"{self.api.faulted_requests - before} requests refused")


@dataclass
class WebKill(Fault):
    """``kill -9`` of one web (gunicorn master and workers) under load, then its restart."""

    cluster: ChaosCluster
    which: str = WEBS[0]
    down: float = 1.0
    name: str = "kill -9 web"

    def inject(self, window: Window) -> None:
        self.cluster.kill(self.which)
        time.sleep(self.down)
        self.cluster.start_web(self.which)  # returns once it answers /healthz


def run_overlapping(faults: Sequence[Fault]) -> list[Window]:
    """Start every fault at once; their windows once all are repaired."""
    windows: list[Window | None] = [None] * len(faults)
    errors: list[BaseException] = []

    def one(index: int, fault: Fault) -> None:
        try:
            windows[index] = fault.run()
        except BaseException as error:  # reported by the caller, after the others ended
            errors.append(error)

    threads = [threading.Thread(target=one, args=pair) for pair in enumerate(faults)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    done = [window for window in windows if window is not None]
    for window in done:
        window.name += " (overlapping)"
    return done
