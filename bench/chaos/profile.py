"""How hard and how long a chaos run pushes: the full default and the bounded CI profile."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["PROFILES", "Profile", "pick_profile"]


@dataclass(frozen=True)
class Profile:
    name: str
    connections: int
    #: Signed webhooks per second, spread over the connections.
    rate: float
    worker_kills: int
    kill_interval: float
    redis_down: float
    database_down: float
    #: Seconds of each app mode (refuse, 503, 429). Beyond ~4 s in all, a stream's head
    #: fails twice and waits for the second retry (about 5 min, workers/retry.py).
    app_each: float
    #: Seconds of each external API status (429, 503, 500).
    api_each: float
    #: After a fault: wait at most this long for the system to drain before the next.
    settle: float
    #: Final drain (load stopped) and the reconciliation's wait.
    drain_timeout: float
    #: Faults run again all at once after the sequence (the overlapping phase).
    overlap: bool = True


PROFILES = {
    "default": Profile(
        name="default",
        connections=20,
        rate=20.0,
        worker_kills=6,
        kill_interval=5.0,
        redis_down=3.0,
        database_down=10.0,
        app_each=3.0,
        api_each=2.0,
        settle=60.0,
        drain_timeout=480.0,
    ),
    # Each fault once, short, none overlapping: about 3 to 4 minutes in all, for CI
    # (tests/e2e/test_chaos.py).
    "ci": Profile(
        name="ci",
        connections=20,
        rate=6.0,
        worker_kills=2,
        kill_interval=3.0,
        redis_down=2.0,
        database_down=10.0,
        app_each=1.2,
        api_each=1.0,
        settle=15.0,
        drain_timeout=150.0,
        overlap=False,
    ),
}


def pick_profile(name: str | None, environ: Mapping[str, str] | None = None) -> Profile:
    """``name``, else ``HOOKSYNC_CHAOS_PROFILE``, else ``default``."""
    env = os.environ if environ is None else environ
    chosen = name or env.get("HOOKSYNC_CHAOS_PROFILE") or "default"
    if chosen not in PROFILES:
        raise ValueError(
            f"HOOKSYNC_CHAOS_PROFILE={chosen!r} is not a profile; use one of {sorted(PROFILES)}"
        )
    return PROFILES[chosen]
