"""The retry schedules, pure: when a failed run and a failed delivery are tried again.

Two schedules, because the failures differ. A run fails transiently when a lock, Redis or
the external API is briefly unavailable: it is retried soon, a few times (``retry_delay``),
from the queue. A delivery fails when the app is down, which can last hours: it is retried
for about a day on a widening, jittered schedule that honours ``Retry-After``
(``next_delay``). Unit-tested without I/O (``tests/unit/test_retry_schedule.py``).
"""

from __future__ import annotations

import random

__all__ = [
    "JITTER",
    "MAX_ATTEMPTS",
    "MAX_RETRY_AFTER_SECONDS",
    "MAX_TRANSIENT_ATTEMPTS",
    "RETRY_DELAYS",
    "next_delay",
    "retry_delay",
]

# -- sync runs --------------------------------------------------------------------------------

#: Attempts a run gets when it keeps failing transiently, before it ends as ERROR.
MAX_TRANSIENT_ATTEMPTS = 5
#: Attempts in all, lost workers included: the next claim ends the run as ERROR unrun.
MAX_ATTEMPTS = 5


def retry_delay(attempt: int) -> int:
    """Seconds before a transiently failed run is tried again: 5, 10, 20, 40, … (≤ 300)."""
    return int(min(300, 5 * 2 ** (attempt - 1)))


# -- notifications to the app -----------------------------------------------------------------

#: Seconds to wait after the 1st, 2nd, ... failed attempt. After the 8th attempt fails
#: (all seven waits used) the notification is ``failed``: about 28 hours of retries.
RETRY_DELAYS: tuple[int, ...] = (5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600)
#: Each wait is scaled by a uniform factor in [1 - JITTER, 1 + JITTER] so that an app coming
#: back from an outage is not hit by every pending retry in the same second.
JITTER = 0.2
#: A ``Retry-After`` longer than this is capped: a misconfigured app asking for a year must
#: not park a notification beyond the operator's reach.
MAX_RETRY_AFTER_SECONDS = 24 * 3600

_rng = random.Random()


def next_delay(
    attempts: int, retry_after: float | None = None, rng: random.Random | None = None
) -> float | None:
    """Seconds to wait before the next delivery attempt, or None when retries are exhausted.

    Args:
        attempts: How many attempts have failed so far (1 after the first failure).
        retry_after: Seconds the app asked for in ``Retry-After``; honoured when longer
            than the jittered schedule, capped at ``MAX_RETRY_AFTER_SECONDS``.
        rng: Source of jitter (tests pass a seeded one).
    """
    if attempts < 1:
        raise ValueError(f"attempts must be at least 1 after a failed attempt, got {attempts!r}")
    if attempts > len(RETRY_DELAYS):
        return None
    factor = (rng or _rng).uniform(1 - JITTER, 1 + JITTER)
    delay = RETRY_DELAYS[attempts - 1] * factor
    if retry_after is not None and retry_after > delay:
        delay = min(float(retry_after), float(MAX_RETRY_AFTER_SECONDS))
    return delay
