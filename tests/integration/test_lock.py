"""The per-connection Redis lock: exclusion, renewal, expiry, and why expiry is harmless."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import redis

from cache.context import AppContext
from cache.db import session_scope
from cache.lock import LockTimeout, connection_lock, free_connection_locks, lock_name
from cache.store import RecordStore
from config.errors import RetriableError
from tests.support.rows import insert_connection


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def test_the_lock_excludes_a_second_holder(client: redis.Redis) -> None:
    with connection_lock(client, 1, timeout=5, wait=1):
        assert client.exists(lock_name(1))
        started = time.monotonic()
        with pytest.raises(LockTimeout) as caught, connection_lock(client, 1, wait=0.3):
            pass  # pragma: no cover - never acquired
        assert 0.25 < time.monotonic() - started < 3
        assert isinstance(caught.value, RetriableError)
        assert "connection 1" in str(caught.value)
        with connection_lock(client, 2, wait=0.3):  # other connections are independent
            pass
    assert not client.exists(lock_name(1)), "released on exit"
    with connection_lock(client, 1, wait=0.3):
        pass


def test_a_waiter_gets_the_lock_when_it_is_released(client: redis.Redis) -> None:
    order: list[str] = []
    holding = threading.Event()

    def holder() -> None:
        with connection_lock(client, 7, timeout=5):
            holding.set()
            time.sleep(0.3)
            order.append("first done")

    thread = threading.Thread(target=holder)
    thread.start()
    holding.wait(5)
    with connection_lock(client, 7, timeout=5, wait=5):
        order.append("second in")
    thread.join()
    assert order == ["first done", "second in"]


def test_the_lock_is_renewed_while_held(client: redis.Redis) -> None:
    with connection_lock(client, 3, timeout=0.6) as held:
        time.sleep(1.5)  # well past the timeout: renewal every 0.2 s keeps it
        assert client.exists(lock_name(3))
        assert not held.is_lost
        ttl = client.pttl(lock_name(3))
        assert 0 < ttl <= 600
    assert not client.exists(lock_name(3))


def test_release_after_expiry_logs_instead_of_raising(
    client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="cache.lock"):
        with connection_lock(client, 4, timeout=0.2, renew=False):
            time.sleep(0.4)
            assert not client.exists(lock_name(4))
    assert "no longer held at release" in caplog.text


def test_renewal_notices_a_lost_lock(client: redis.Redis, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="cache.lock"):
        with connection_lock(client, 5, timeout=0.6) as held:
            client.delete(lock_name(5))  # e.g. a Redis failover lost it
            client.set(lock_name(5), "someone else")
            time.sleep(0.5)
            assert held.is_lost
        assert client.get(lock_name(5)) == b"someone else", "never releases another's lock"
    assert "expired before it was renewed" in caplog.text


def test_an_unreachable_redis_is_retriable() -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    with pytest.raises(RetriableError, match="cannot reach Redis"):
        with connection_lock(client, 1, wait=0.2):
            pass  # pragma: no cover


def test_an_expired_lock_cannot_cause_a_stale_overwrite(ctx: AppContext) -> None:
    """Writer A's lock expires mid-work; B takes it and writes a newer record; then A's
    stale batch commits: the compare-and-write in A's transaction must keep B's record."""
    with session_scope(ctx.sessions) as session:
        pk = insert_connection(session, "tasktracker", "c1").id
    store = RecordStore(ctx.sessions, cursor_key=ctx.settings.secret_key)
    store.save(pk, "Task", [{"id": 1, "v": "original"}])

    with connection_lock(ctx.redis, pk, timeout=0.2, renew=False):
        # A (a poll) starts: its cursor, then it fetches (stale) data and stalls.
        cursor_a = store.current_seq(pk, "Task")
        stale = [{"id": 1, "v": "fetched by the poll before the webhook"}]
        time.sleep(0.4)  # the lock expires

        # B (a webhook) gets the lock and writes the newer record.
        with connection_lock(ctx.redis, pk, timeout=5, wait=1):
            newer = store.save(pk, "Task", [{"id": 1, "v": "webhook"}])
        assert newer.updated == 1

        # A wakes up and commits its batch, still believing it holds the lock.
        got = store.save(
            pk,
            "Task",
            stale,
            strategy={"strategy": "ignore_if_modified_after"},
            cursor_seq=cursor_a,
        )
    assert got.skipped == 1 and got.updated == 0 and got.max_seq is None
    record = store.list_records(pk, "Task").records[0]
    assert record["v"] == "webhook"


# -- a batch's locks: free ones, a budget's worth -------------------------------------------


def test_a_batch_takes_free_locks_in_order_up_to_its_budget(client: redis.Redis) -> None:
    work = {3: 10, 1: 10, 2: 10, 4: 10}
    with free_connection_locks(client, work, budget=15, timeout=5, wait=1) as first:
        # 10 runs of connection 1 are under the budget of 15, so connection 2 is taken too.
        assert [lock.connection_pk for lock in first] == [1, 2]
        assert client.pttl(lock_name(1)) > 4000
        # A second batch at the same time takes the next free ones instead of waiting.
        with free_connection_locks(client, work, budget=15, timeout=5, wait=1) as second:
            assert [lock.connection_pk for lock in second] == [3, 4]
    assert not any(client.exists(lock_name(pk)) for pk in work), "all released on exit"


def test_one_connection_over_the_budget_is_still_taken(client: redis.Redis) -> None:
    with free_connection_locks(client, {5: 100, 6: 1}, budget=25, timeout=5, wait=1) as held:
        assert [lock.connection_pk for lock in held] == [5]


def test_a_batch_waits_for_whichever_of_its_connections_frees_first(
    client: redis.Redis,
) -> None:
    released = threading.Event()

    def hold(pk: int, seconds: float) -> None:
        with connection_lock(client, pk, timeout=5):
            holding[pk].set()
            time.sleep(seconds)
        if pk == 2:
            released.set()

    holding = {1: threading.Event(), 2: threading.Event()}
    threads = [
        threading.Thread(target=hold, args=(1, 2.0)),
        threading.Thread(target=hold, args=(2, 0.3)),
    ]
    for thread in threads:
        thread.start()
    for event in holding.values():
        event.wait(5)
    started = time.monotonic()
    with free_connection_locks(client, {1: 1, 2: 1}, budget=25, timeout=5, wait=5) as held:
        waited = time.monotonic() - started
        assert released.is_set() and [lock.connection_pk for lock in held] == [2]
    assert waited < 1.5, "it took connection 2 when it was freed, not the lowest (1)"
    for thread in threads:
        thread.join()


def test_a_batch_whose_connections_stay_locked_times_out_naming_them(
    client: redis.Redis,
) -> None:
    with connection_lock(client, 8, timeout=5), connection_lock(client, 9, timeout=5):
        with pytest.raises(LockTimeout, match=r"connections \[8, 9\] stayed locked for 0.3s"):
            with free_connection_locks(client, {9: 1, 8: 1}, budget=25, timeout=5, wait=0.3):
                pass  # pragma: no cover - never acquired
