"""Running calls at the same instant, for tests of races."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar, cast

T = TypeVar("T")


def run_at_once(calls: Sequence[Callable[[], T]], *, timeout: float = 60.0) -> list[T]:
    """Run each call in its own thread, all released together by a barrier.

    Returns:
        The calls' results, in the order of ``calls``.

    Raises:
        AssertionError: a call raised (the first error is chained, all are listed), or one
            was still running after ``timeout`` seconds.
    """
    barrier = threading.Barrier(len(calls))
    results: list[T | None] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], T]) -> None:
        try:
            barrier.wait(timeout)
            results[index] = call()
        except BaseException as error:  # noqa: BLE001 (raised again in the caller's thread)
            errors.append(error)

    threads = [threading.Thread(target=run, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    if any(thread.is_alive() for thread in threads):
        raise AssertionError(f"a call was still running after {timeout} s")
    if errors:
        failed = f"{len(errors)} of {len(calls)} calls raised: {errors!r}"
        raise AssertionError(failed) from errors[0]
    return cast(list[T], results)  # no call raised: every slot holds its result
