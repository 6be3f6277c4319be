"""The per-connection serialized lock (Redis), renewed while held.

Batches of one connection take this lock so that they run one at a time in the order they
asked for it. It is an optimisation of contention, not the guarantee: the store compares
and writes inside one database transaction, so a lock that expired (a stalled worker, a
Redis failover) can delay work but cannot produce a stale overwrite.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import redis
from redis.commands.core import Script
from redis.exceptions import LockError, LockNotOwnedError

from config.errors import RetriableError

__all__ = [
    "ConnectionLock",
    "LockTimeout",
    "connection_lock",
    "free_connection_locks",
    "lock_name",
]

log = logging.getLogger(__name__)


class LockTimeout(RetriableError):
    """The connection's lock was not acquired within the wait; try the work again later."""


#: Seconds between two tries for a lock held elsewhere. Short: the holder is usually one
#: batch's transaction, milliseconds long, and the waiter's latency is what it waits here.
POLL_SECONDS = 0.005
#: The longest pause between two tries of a batch waiting for any of its connections
#: (the pause doubles from ``POLL_SECONDS``): several waiting batches stay cheap for Redis.
MAX_POLL_SECONDS = 0.05


def lock_name(connection_pk: int) -> str:
    return f"hooksync:lock:connection:{connection_pk}"


class ConnectionLock:
    """A held lock; ``is_lost`` turns true if a renewal found it expired or taken."""

    def __init__(self, lock: redis.lock.Lock, connection_pk: int, timeout: float) -> None:
        self._lock = lock
        self.connection_pk = connection_pk
        self.timeout = timeout
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def is_lost(self) -> bool:
        return self._lost.is_set()

    def _start_renewal(self, interval: float) -> None:
        self._thread = threading.Thread(
            target=self._renew,
            args=(interval,),
            name=f"hooksync-lock-{self.connection_pk}",
            daemon=True,
        )
        self._thread.start()

    def _renew(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self._lock.extend(self.timeout, replace_ttl=True)
            except LockNotOwnedError:
                self._lost.set()
                log.warning(
                    "lock of connection %s expired before it was renewed; the store's "
                    "transactions still refuse stale overwrites",
                    self.connection_pk,
                )
                return
            except redis.RedisError:
                # Keep trying: a short Redis hiccup should not drop a lock that is still ours.
                log.warning(
                    "could not renew the lock of connection %s", self.connection_pk, exc_info=True
                )

    def _release(self) -> None:
        # Stop renewing before releasing, so no extend races the release.
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self._lock.release()
        except (LockError, redis.RedisError):
            log.warning(
                "lock of connection %s was no longer held at release (it expired); nothing to undo",
                self.connection_pk,
                exc_info=True,
            )


@contextmanager
def connection_lock(
    redis_client: redis.Redis,
    connection_pk: int,
    *,
    timeout: float = 30.0,
    wait: float = 60.0,
    renew: bool = True,
) -> Iterator[ConnectionLock]:
    """Hold the connection's lock for the block, renewing it every ``timeout / 3``.

    Args:
        timeout: seconds the lock lives without renewal (a crashed holder frees it then).
        wait: seconds to wait for it before giving up.
        renew: keep the lock alive while held (tests turn this off to force expiry).

    Raises:
        LockTimeout: not acquired within ``wait``.
        RetriableError: Redis cannot be reached.
    """
    if timeout <= 0:
        raise ValueError(f"timeout must be positive, got {timeout!r}")
    held = _acquire(redis_client, connection_pk, timeout=timeout, wait=wait)
    if renew:
        held._start_renewal(timeout / 3)
    try:
        yield held
    finally:
        held._release()


@contextmanager
def free_connection_locks(
    redis_client: redis.Redis,
    work: Mapping[int, int],
    *,
    budget: int,
    timeout: float = 30.0,
    wait: float = 60.0,
) -> Iterator[list[ConnectionLock]]:
    """Hold, for the block, free locks among ``work``'s connections, at least one.

    For a batch that runs the work of several connections. ``work`` maps each connection to
    how much of the batch's work is its (the number of runs); the free locks are taken in
    ascending order, in one atomic step, until their work reaches ``budget``. Taking a
    budget's worth rather than every free lock lets batches running at the same time work
    on different connections side by side, instead of the first one holding every lock
    while it works through them one after another and the others waiting on it. When none
    is free it waits for whichever frees first. Whoever holds several locks took them
    without waiting, so holders cannot wait for each other in a cycle.

    Raises:
        LockTimeout: none was free for ``wait`` seconds.
        RetriableError: Redis cannot be reached.
    """
    pks = sorted(work)
    if not pks:
        raise ValueError("free_connection_locks needs at least one connection")
    held: list[ConnectionLock] = []
    try:
        weights = [work[pk] for pk in pks]
        held = _take_free(redis_client, pks, weights, budget, timeout)
        pause = POLL_SECONDS
        deadline = time.monotonic() + wait
        while not held:
            if time.monotonic() >= deadline:
                raise LockTimeout(
                    f"connections {pks} stayed locked for {wait:g}s (other executions are "
                    "writing to them); the work will be retried"
                )
            time.sleep(pause)
            pause = min(pause * 2, MAX_POLL_SECONDS)
            held = _take_free(redis_client, pks, weights, budget, timeout)
        for lock in held:
            lock._start_renewal(timeout / 3)
        yield held
    finally:
        for lock in reversed(held):
            lock._release()


#: Sets free locks in order until the work of those taken reaches the budget; returns the
#: 1-based indexes taken. KEYS: the lock names; ARGV: budget, TTL (ms), then per key its
#: token and its work.
_TAKE_FREE = """
local budget = tonumber(ARGV[1])
local taken = {}
local load = 0
for i, key in ipairs(KEYS) do
  if load >= budget then break end
  if redis.call('set', key, ARGV[1 + 2 * i], 'NX', 'PX', ARGV[2]) then
    taken[#taken + 1] = i
    load = load + tonumber(ARGV[2 + 2 * i])
  end
end
return taken
"""


_scripts: list[Script] = []


def _take_free_script(redis_client: redis.Redis) -> Script:
    # Registered once per process (its SHA computed once); called with each caller's client,
    # it runs by EVALSHA and loads itself into a Redis that does not know it yet.
    if not _scripts:
        _scripts.append(redis_client.register_script(_TAKE_FREE))
    return _scripts[0]


def _take_free(
    redis_client: redis.Redis, pks: list[int], weights: list[int], budget: int, timeout: float
) -> list[ConnectionLock]:
    """Free locks among ``pks`` up to ``budget`` of work, taken at once (not renewed yet)."""
    tokens = [uuid.uuid4().hex for _ in pks]
    args: list[str | int] = [budget, int(timeout * 1000)]
    for token, weight in zip(tokens, weights, strict=True):
        args += [token, weight]
    try:
        taken = _take_free_script(redis_client)(
            keys=[lock_name(pk) for pk in pks], args=args, client=redis_client
        )
    except redis.RedisError as error:
        raise RetriableError(f"cannot reach Redis to lock connections: {error}") from error
    held = []
    for index in taken:
        pk, token = pks[index - 1], tokens[index - 1]
        lock = redis_client.lock(
            lock_name(pk), timeout=timeout, sleep=POLL_SECONDS, thread_local=False
        )
        # What redis-py's Lock.acquire records, so its release and extend work.
        lock.local.token = token.encode()
        held.append(ConnectionLock(lock, pk, timeout))
    return held


def _acquire(
    redis_client: redis.Redis, connection_pk: int, *, timeout: float, wait: float
) -> ConnectionLock:
    lock = redis_client.lock(
        lock_name(connection_pk), timeout=timeout, sleep=POLL_SECONDS, thread_local=False
    )
    try:
        acquired = lock.acquire(blocking=True, blocking_timeout=wait)
    except redis.RedisError as error:
        raise RetriableError(
            f"cannot reach Redis to lock connection {connection_pk}: {error}"
        ) from error
    if not acquired:
        raise LockTimeout(
            f"connection {connection_pk} stayed locked for {wait:g}s (another execution is "
            "writing to it); the work will be retried"
        )
    return ConnectionLock(lock, connection_pk, timeout)
