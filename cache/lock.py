"""The per-connection serialized lock (Redis), renewed while held.

Batches of one connection take this lock so that they run one at a time in the order they
asked for it. It is an optimisation of contention, not the guarantee: the store compares
and writes inside one database transaction, so a lock that expired (a stalled worker, a
Redis failover) can delay work but cannot produce a stale overwrite.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import redis
from redis.exceptions import LockError, LockNotOwnedError

from config.errors import RetriableError

__all__ = [
    "ConnectionLock",
    "LockTimeout",
    "connection_lock",
    "connection_locks",
    "free_connection_locks",
    "lock_name",
]

log = logging.getLogger(__name__)


class LockTimeout(RetriableError):
    """The connection's lock was not acquired within the wait; try the work again later."""


#: Seconds between two tries for a lock held elsewhere. Short: the holder is usually one
#: batch's transaction, milliseconds long, and the waiter's latency is what it waits here.
POLL_SECONDS = 0.005


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
def connection_locks(
    redis_client: redis.Redis,
    connection_pks: Iterable[int],
    *,
    timeout: float = 30.0,
    wait: float = 60.0,
) -> Iterator[list[ConnectionLock]]:
    """Hold the locks of several connections for the block (a coalesced batch's writes).

    The free ones are taken in one round trip; if any is held elsewhere, those taken are
    let go and all are taken one by one in ascending order, the order every holder of
    several uses, so two batches waiting for each other's connections cannot deadlock.

    Raises:
        LockTimeout: a lock was not acquired within ``wait``.
        RetriableError: Redis cannot be reached.
    """
    pks = sorted(set(connection_pks))
    held: list[ConnectionLock] = []
    try:
        held = _take_free(redis_client, pks, timeout)
        if len(held) < len(pks):
            for lock in held:
                lock._release()
            held = []
            for pk in pks:
                held.append(_acquire(redis_client, pk, timeout=timeout, wait=wait))
        for lock in held:
            lock._start_renewal(timeout / 3)
        yield held
    finally:
        for lock in reversed(held):
            lock._release()


@contextmanager
def free_connection_locks(
    redis_client: redis.Redis,
    connection_pks: Iterable[int],
    *,
    timeout: float = 30.0,
    wait: float = 60.0,
) -> Iterator[list[ConnectionLock]]:
    """Hold, for the block, the locks of those connections that are free now (at least one).

    For a batch that runs the work of several connections: it takes the free ones in one
    round trip and does their work while other holders finish theirs; when none is free it
    waits for the lowest. Whoever holds several locks here took them without waiting, so
    holders cannot wait for each other in a cycle.

    Raises:
        LockTimeout: none was free and the lowest was not acquired within ``wait``.
        RetriableError: Redis cannot be reached.
    """
    pks = sorted(set(connection_pks))
    if not pks:
        raise ValueError("free_connection_locks needs at least one connection")
    held: list[ConnectionLock] = []
    try:
        held = _take_free(redis_client, pks, timeout) or [
            _acquire(redis_client, pks[0], timeout=timeout, wait=wait)
        ]
        for lock in held:
            lock._start_renewal(timeout / 3)
        yield held
    finally:
        for lock in reversed(held):
            lock._release()


def _take_free(redis_client: redis.Redis, pks: list[int], timeout: float) -> list[ConnectionLock]:
    """The locks among ``pks`` that nobody holds, taken in one round trip (not renewed yet)."""
    locks = [
        redis_client.lock(lock_name(pk), timeout=timeout, sleep=POLL_SECONDS, thread_local=False)
        for pk in pks
    ]
    try:
        pipe = redis_client.pipeline(transaction=False)
        tokens = [uuid.uuid4().hex.encode() for _ in locks]
        for lock, token in zip(locks, tokens, strict=True):
            pipe.set(lock.name, token, nx=True, px=int(timeout * 1000))
        taken = pipe.execute()
    except redis.RedisError as error:
        raise RetriableError(f"cannot reach Redis to lock connections: {error}") from error
    held = []
    for lock, token, pk, ok in zip(locks, tokens, pks, taken, strict=True):
        if ok:
            # What redis-py's Lock.acquire records, so its release and extend work.
            lock.local.token = token
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
