"""Per-run time limits: stop a script that runs past its soft limit.

A Celery task's ``soft_time_limit`` would stop the whole task, but the inbox drain runs a
batch of webhook executions in one task, so the limit is per run and armed around each
script call here:

- **In the main thread** (a prefork child runs its task there; so do tests and
  ``hooksync dryrun``) a ``SIGALRM`` timer raises :class:`RunTimeLimitExceeded` inside the
  script at the deadline, even in ``time.sleep`` or a blocking socket read.
- **In another thread** (a threads pool) a timer thread raises it asynchronously in the
  script's thread: that interrupts Python code, not a call blocked in C.

Either way the runtime also refuses every further batch past the deadline
(:meth:`RunDeadline.check`), so a script that swallows the exception cannot write on. What
ignores both is killed by the task's hard limit (``workers.celery_app``), and the next
claim of its run ends it as a timeout (``workers.execution``).
"""

from __future__ import annotations

import ctypes
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

__all__ = ["RunDeadline", "RunTimeLimitExceeded", "soft_time_limit"]


class RunTimeLimitExceeded(Exception):
    """The run's script ran past its soft time limit (error type ``timeout``)."""


class RunDeadline:
    """When a run must have finished, on this process's monotonic clock.

    Args:
        run_id: For the message.
        seconds: The soft limit, from now.
    """

    def __init__(self, run_id: int, seconds: float) -> None:
        self.run_id = run_id
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def error(self) -> RunTimeLimitExceeded:
        return RunTimeLimitExceeded(
            f"run {self.run_id} was stopped after its time limit of {self.seconds:g} s "
            "(the sync's time_limit, else HOOKSYNC_RUN_SOFT_LIMIT_SECONDS)"
        )

    def check(self) -> None:
        """Raise :class:`RunTimeLimitExceeded` once the deadline has passed."""
        if self.remaining() <= 0:
            raise self.error()


@contextmanager
def soft_time_limit(deadline: RunDeadline) -> Iterator[None]:
    """Raise :class:`RunTimeLimitExceeded` in the calling thread at ``deadline``.

    Only the code inside the ``with`` is interrupted: the timer is disarmed on the way out,
    and a signal arriving after that is ignored.
    """
    remaining = deadline.remaining()
    if remaining <= 0:
        raise deadline.error()
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
        with _alarm(deadline, remaining):
            yield
    else:
        with _async_raise(deadline, remaining):
            yield


@contextmanager
def _alarm(deadline: RunDeadline, remaining: float) -> Iterator[None]:
    armed = True

    def fire(signum: int, frame: FrameType | None) -> None:
        if armed:
            raise deadline.error()

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, remaining)
    try:
        yield
    finally:
        armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextmanager
def _async_raise(deadline: RunDeadline, remaining: float) -> Iterator[None]:
    target = threading.get_ident()
    done = threading.Lock()  # held while the script may still be interrupted

    def fire() -> None:
        if done.acquire(blocking=False):
            try:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(target), ctypes.py_object(RunTimeLimitExceeded)
                )
            finally:
                done.release()

    timer = threading.Timer(remaining, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with done:  # no interruption can land after this point
            timer.join()
