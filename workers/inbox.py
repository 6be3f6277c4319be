"""The durable webhook inbox: a Redis stream read through a consumer group.

Between the receiver's 202 and its ``webhook_events`` row a webhook exists only in Redis, so
the way a worker takes it off Redis decides whether a crash can lose it. A Celery message
cannot carry that guarantee: kombu's Redis transport pops a message first and records it as
unacknowledged in a second step, and a consumer killed between the two loses it for good.
The inbox closes that window:

1. the receiver ``XADD``s the event to the stream (``push``); the 202 goes out only after
   Redis acknowledged the write (with the embedded Redis: after its AOF fsync);
2. a worker takes entries with ``XREADGROUP`` (``read``), which moves them into the group's
   pending list in the same atomic step — a consumer that dies now leaves them pending, not
   gone;
3. the worker ``XACK``s and deletes them (``ack``) only after their ``webhook_events`` rows
   committed; routing is idempotent on the event id, so an entry routed twice (the worker
   died between the commit and the ack) creates nothing twice. Entries the database could
   not take yet are put back at the end of the stream (``requeue``) for any worker;
4. the sweeper (the beat tick) ``XAUTOCLAIM``s entries left pending longer than
   ``RECLAIM_IDLE_SECONDS`` by a dead consumer and routes them (``reclaim``).

Celery messages are only a wake-up: ``push`` also sets a short-lived flag, and the receiver
publishes a ``hooksync.drain_inbox`` message only when it was the one to set it, i.e. when no
drain is already queued that will read this entry. A drain clears the flag before it reads,
so an entry pushed after that read sets the flag again and wakes another drain. A lost
wake-up costs at most one tick: the tick drains the inbox too.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from config.errors import RetriableError

__all__ = [
    "GROUP",
    "RECLAIM_IDLE_SECONDS",
    "STREAM",
    "WAKE_FLAG",
    "Backlog",
    "InboxEntry",
    "ack",
    "backlog",
    "clear_wake",
    "consumer_name",
    "pending_count",
    "push",
    "read",
    "reclaim",
    "requeue",
]

#: The stream holding webhooks that are accepted and not yet recorded in the database.
STREAM = "hooksync:inbox"
#: The consumer group every worker reads the stream through.
GROUP = "hooksync"
#: Set while a drain is queued and has not read yet (see the module docstring).
WAKE_FLAG = "hooksync:inbox:wake"
#: The flag's lifetime: if its wake-up message was lost, the next push publishes another.
WAKE_FLAG_MS = 2000
#: An entry pending this long belongs to a dead (or stuck) consumer and may be taken over.
#: Routing a batch takes milliseconds; this only has to be longer than the slowest one.
RECLAIM_IDLE_SECONDS = 15

_FIELD = b"e"


@dataclass(frozen=True)
class InboxEntry:
    """One stream entry: its stream id (for ``ack``) and the receiver's event dict."""

    entry_id: bytes
    event: dict[str, Any] | None
    #: Why ``event`` is None: the entry could not be decoded (kept for the log).
    problem: str | None = None
    #: The stored text, for ``requeue``.
    raw: bytes | None = None


def consumer_name() -> str:
    """This process's consumer name in the group: host and pid, unique per live process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def push(client: redis.Redis, event: dict[str, Any]) -> bool:
    """Append ``event`` to the inbox; True when the caller must publish a wake-up.

    One MULTI/EXEC: the entry and the flag are written together, and Redis (with the
    embedded configuration) fsyncs them before it answers.

    Raises:
        RetriableError: Redis did not acknowledge the write; the webhook was not stored.
    """
    payload = json.dumps(event, separators=(",", ":"))
    try:
        pipe = client.pipeline(transaction=True)
        pipe.xadd(STREAM, {_FIELD: payload})
        pipe.set(WAKE_FLAG, b"1", nx=True, px=WAKE_FLAG_MS)
        _entry_id, flag_set = pipe.execute()
    except redis.RedisError as error:
        raise RetriableError(
            f"could not store the webhook in the Redis inbox ({type(error).__name__}: {error})"
        ) from error
    return bool(flag_set)


def clear_wake(client: redis.Redis) -> None:
    """Clear the wake-up flag; call it before ``read`` (see the module docstring)."""
    client.delete(WAKE_FLAG)


def read(client: redis.Redis, consumer: str, count: int) -> list[InboxEntry]:
    """Take up to ``count`` new entries for ``consumer`` (they stay pending until ``ack``)."""
    try:
        answer = client.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=count)
    except redis.ResponseError as error:
        if "NOGROUP" not in str(error):
            raise
        _create_group(client)
        answer = client.xreadgroup(GROUP, consumer, {STREAM: ">"}, count=count)
    if not answer:
        return []
    messages: list[Any] = answer[0][1]  # type: ignore[index,assignment]
    return [_decode(entry_id, fields) for entry_id, fields in messages]


def reclaim(
    client: redis.Redis,
    consumer: str,
    count: int,
    *,
    min_idle_seconds: float = RECLAIM_IDLE_SECONDS,
) -> list[InboxEntry]:
    """Take over up to ``count`` entries pending longer than ``min_idle_seconds``."""
    try:
        answer = client.xautoclaim(
            STREAM, GROUP, consumer, int(min_idle_seconds * 1000), start_id="0-0", count=count
        )
    except redis.ResponseError as error:
        if "NOGROUP" not in str(error):
            raise
        _create_group(client)
        return []
    messages: list[Any] = answer[1]  # type: ignore[index]
    # Entries deleted meanwhile come back as (id, None); they were acknowledged already.
    return [_decode(entry_id, fields) for entry_id, fields in messages if fields]


def ack(client: redis.Redis, entry_ids: Sequence[bytes]) -> None:
    """Acknowledge and delete entries whose events are recorded in the database."""
    if not entry_ids:
        return
    pipe = client.pipeline(transaction=True)
    pipe.xack(STREAM, GROUP, *entry_ids)
    pipe.xdel(STREAM, *entry_ids)
    pipe.execute()


def requeue(client: redis.Redis, entries: Sequence[InboxEntry]) -> None:
    """Put entries this consumer could not record back at the end, for any consumer.

    One MULTI/EXEC: the copies are added and the originals acknowledged together, so an
    entry is never in neither place (nor, for a reader, in both).
    """
    if not entries:
        return
    pipe = client.pipeline(transaction=True)
    for entry in entries:
        if entry.raw is not None:
            pipe.xadd(STREAM, {_FIELD: entry.raw})
    ids = [entry.entry_id for entry in entries]
    pipe.xack(STREAM, GROUP, *ids)
    pipe.xdel(STREAM, *ids)
    pipe.execute()


def pending_count(client: redis.Redis) -> int:
    """Entries not yet acknowledged: unread plus pending (tests and the bench)."""
    return int(client.xlen(STREAM))


@dataclass(frozen=True)
class Backlog:
    """What the inbox holds right now (``/metrics``)."""

    #: Entries not yet acknowledged: unread plus pending.
    length: int
    #: Entries a worker has read and not yet acknowledged (its batch in flight, or left by a
    #: dead worker until the tick reclaims them).
    pending: int
    #: The receiver's ``received_at`` of the first entry in the stream (None when empty).
    #: Requeued entries go to the end, so this is the oldest one in all but an outage.
    oldest_received_at: str | None


def backlog(client: redis.Redis) -> Backlog:
    """Read the inbox's size and its first entry in one round trip (three cheap commands)."""
    pipe = client.pipeline(transaction=False)
    pipe.xlen(STREAM)
    pipe.xpending(STREAM, GROUP)
    pipe.xrange(STREAM, count=1)
    length, pending, first = pipe.execute(raise_on_error=False)
    if isinstance(length, Exception):
        raise length
    if isinstance(pending, redis.ResponseError) and "NOGROUP" in str(pending):
        pending = {"pending": 0}  # no worker has read yet
    elif isinstance(pending, Exception):
        raise pending
    oldest = None
    if isinstance(first, list) and first:
        event = _decode(*first[0]).event
        received = event.get("received_at") if event is not None else None
        oldest = received if isinstance(received, str) else None
    return Backlog(int(length), int(pending["pending"]), oldest)


def _create_group(client: redis.Redis) -> None:
    # From id 0: entries pushed before any worker created the group are read too.
    try:
        client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def _decode(entry_id: bytes, fields: dict[bytes, bytes]) -> InboxEntry:
    raw = fields.get(_FIELD)
    try:
        event = json.loads(raw) if raw is not None else None
    except ValueError as error:
        return InboxEntry(entry_id, None, f"not JSON: {error}", raw)
    if not isinstance(event, dict):
        problem = f"expected an event object, got {type(event).__name__}"
        return InboxEntry(entry_id, None, problem, raw)
    return InboxEntry(entry_id, event, None, raw)
