"""The webhooks hooksync sends the app, pure: their bodies and the app URLs' public forms.

Bodies follow Nango's shapes (ARCHITECTURE.md §8) and are serialized the way JavaScript's
``JSON.stringify`` would; the outbox (``workers.outbox``) stores that exact text. An app URL
may hold a token, so it is shown only through ``redact_url`` and named in the API by
``endpoint_id``. No I/O: unit-tested without a server.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "COUNT_NAMES",
    "encode_body",
    "endpoint_id",
    "forward_body",
    "read_count",
    "redact_url",
    "stream_key",
    "sync_envelope",
]

#: The counts of a completion webhook's ``responseResults``, in Nango's order.
COUNT_NAMES = ("added", "updated", "deleted")


def encode_body(body: Mapping[str, Any]) -> str:
    """Serialize a webhook body the way JavaScript's ``JSON.stringify`` would.

    Compact separators, insertion order kept, non-ASCII left as is: an app that re-stringifies
    the parsed body (Nango's legacy ``verifyWebhookSignature`` does) gets the same text back.
    """
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def read_count(model: str, counts: Mapping[str, int], name: str) -> int:
    """``counts[name]`` (0 when absent) of ``model``'s results, checked to be a count.

    Raises:
        ValueError: Not a whole number >= 0 (naming the model and the count).
    """
    value = counts.get(name, 0) if isinstance(counts, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(
            f"results[{model!r}][{name!r}] must be a count (a whole number >= 0), got {value!r}"
        )
    return value


def sync_envelope(
    *,
    connection_id: str,
    provider_config_key: str,
    sync_name: str,
    model: str | None,
    sync_type: str,
) -> dict[str, Any]:
    """The leading fields of a sync webhook, success or failure, in Nango's order."""
    return {
        "from": "nango",
        "type": "sync",
        "connectionId": connection_id,
        "providerConfigKey": provider_config_key,
        "syncName": sync_name,
        "model": model,
        "syncType": sync_type,
    }


def forward_body(
    provider_config_key: str, connection_id: str | None, payload: Any
) -> dict[str, Any]:
    """A forwarded external webhook (``"type": "forward"``).

    ``from`` is the integration key: hooksync has no separate provider name.
    """
    return {
        "from": provider_config_key,
        "type": "forward",
        "providerConfigKey": provider_config_key,
        "connectionId": connection_id,
        "payload": payload,
    }


def redact_url(url: str) -> str:
    """``scheme://host[:port]/path``: user, password, query and fragment dropped."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    suffix = "?…" if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, "", "")) + suffix


def endpoint_id(url: str) -> str:
    """A configured app URL's stable id for the API: the first 12 hex of its sha256.

    The URL itself may hold a token, so it is never a path segment.
    """
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]


def stream_key(url: str, body: Mapping[str, Any]) -> str | None:
    """The ordered delivery stream of one sync webhook to ``url``, or None (not ordered).

    A stream is (app URL, integration, connection, sync, model): its rows go out one at a
    time in the order they were recorded (ARCHITECTURE.md §8). A failure webhook joins the
    stream of the model it names (the sync's first output model, or none), so it is ordered
    with that model's completions. Forwards carry no stream: they are relayed as they come.
    The key is a sha256 (64 hex), so the URL's token is not stored twice in the clear.
    """
    if body.get("type") != "sync":
        return None
    parts = [
        url,
        body.get("providerConfigKey"),
        body.get("connectionId"),
        body.get("syncName"),
        body.get("model"),
    ]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode("utf-8")).hexdigest()
