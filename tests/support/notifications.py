"""Recognizing the completion webhooks an app receives (``demo.app_receiver.AppReceiver``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def notified(sync_type: str, **counts: int) -> Callable[[dict[str, Any]], bool]:
    """A predicate for ``AppReceiver.wait_for``: a successful completion of ``sync_type``
    whose ``responseResults`` has each of ``counts`` (e.g. ``added=3``)."""

    def predicate(body: dict[str, Any]) -> bool:
        if body.get("syncType") != sync_type or not body.get("success"):
            return False
        results = body["responseResults"]
        return all(results.get(name) == value for name, value in counts.items())

    return predicate
