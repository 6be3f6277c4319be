"""The messages waiting on hooksync's Celery queue in Redis, decoded, for assertions."""

from __future__ import annotations

import base64
import json
from typing import Any

import redis
from kombu.transport.redis import PRIORITY_STEPS

from workers.celery_app import queue_lists


def queued_messages(client: redis.Redis, priority: int | None = None) -> list[dict[str, Any]]:
    """Task name and arguments of every waiting message, over all priority lists (or the
    list of one ``priority`` step).

    Within one list kombu pushes on the left and pops on the right, so each list is read
    oldest first; lists come in the order a worker fetches them (ticks before work).
    """
    names = queue_lists()
    if priority is not None:
        names = [queue_lists()[PRIORITY_STEPS.index(priority)]]
    messages = []
    for name in names:
        for raw in reversed(client.lrange(name, 0, -1)):
            envelope = json.loads(raw)
            args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
            messages.append({"task": envelope["headers"]["task"], "args": args})
    return messages
