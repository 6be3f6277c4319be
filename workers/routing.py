"""Routing decisions for external webhooks: pure functions, no I/O (ARCHITECTURE.md §6).

Given a provider's ``webhook`` options, the request headers and the raw body, these functions
decide what ``workers/events.py`` writes: the events inside the request (split
when the provider batches them), each event's type and delivery id, the connections it
belongs to and the syncs subscribed to it.

Rules worth knowing:

* Dotted paths (``account.id``, ``events.0.id``) walk objects by key and arrays by index;
  ``""`` and ``"$"`` mean the whole document. A leading ``"$."`` is accepted too.
* In a batch, each event's fields are looked up in the event first, then in the envelope
  (the request body), so ``{"account": "a1", "events": [...]}`` routes every event by
  ``account``.
* Delivery ids (the dedupe key) come from the configured header or path, else the sha256
  hex of the raw body. When a batch is split, an id that is not the event's own (a header,
  an envelope field, the body hash) gets the suffix ``:<index>``, so each event dedupes
  separately.
* Connection values and metadata values are compared as strings (``12345`` equals
  ``"12345"``); a metadata value that is an array matches when any element matches.
* A connection route reads a body path or a request header (Shopify names the shop only
  in ``X-Shopify-Shop-Domain``); an event type or delivery id path may list fallbacks,
  tried in order (Slack: ``event.type``, then ``type``).
* With no ``webhook.connection`` route configured, an event goes to the integration's only
  connection when it has exactly one, and to none otherwise (there would be no way to tell
  them apart).
* A body must be acceptable to ``workers.payloads.check_payload`` (nesting, lone
  surrogates): ``parse_body`` applies it, so the receiver's 400 and the worker's
  ``rejected`` follow one rule.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from config.errors import BadInputError
from config.integrations import (
    ConnectionRoute,
    FieldRef,
    IntegrationConfig,
    WebhookConfig,
)
from workers.payloads import MAX_DEPTH, check_payload

__all__ = [
    "EventPlan",
    "EventRoute",
    "connection_key",
    "delivery_id",
    "event_type",
    "header_value",
    "lookup",
    "match_connection",
    "matching_syncs",
    "parse_body",
    "plan_event",
    "routing_headers",
    "split_batch",
]

#: Delivery ids longer than this are replaced by their sha256 (the column holds 255).
_MAX_DELIVERY_ID = 200

_MISSING = object()

#: One connection as routing sees it: (connection_id, metadata).
ConnectionInfo = tuple[str, Mapping[str, Any]]


@dataclass(frozen=True)
class EventRoute:
    """The routing decision for one event (one element of a batch, or the whole body)."""

    #: Position in the batch; None when the request was not a batch.
    index: int | None
    #: The event as the sync script will receive it.
    payload: Any
    delivery_id: str
    event_type: str | None
    connection_key: str | None
    #: Matching connection ids (also used for forwarding when no sync matched).
    connection_ids: tuple[str, ...]
    #: Syncs subscribed to ``event_type``.
    sync_names: tuple[str, ...]
    #: Why this event runs nothing; None when it does.
    problem: str | None = None
    #: True when ``problem`` makes the event malformed (rejected), not merely unrouted.
    rejected: bool = False


@dataclass(frozen=True)
class EventPlan:
    """The routing decision for one received request."""

    #: Request-level dedupe id (stored on the ``webhook_events`` row).
    delivery_id: str
    #: The parsed body; None when it could not be parsed.
    body: Any
    routes: tuple[EventRoute, ...]
    #: Why the whole request was rejected (unparsable body, bad batch); None otherwise.
    rejection: str | None = None

    @property
    def event_types(self) -> tuple[str, ...]:
        """Distinct event types, in order of first appearance."""
        seen: dict[str, None] = {}
        for route in self.routes:
            if route.event_type is not None:
                seen.setdefault(route.event_type, None)
        return tuple(seen)


def parse_body(raw: bytes, content_type: str | None = None) -> Any:
    """Parse a webhook body: JSON, or a form whose ``payload`` field is JSON (Slack).

    Raises:
        BadInputError: code ``invalid_body``; the message names the position of the error.
    """
    if not raw.strip():
        raise BadInputError(
            "body is empty; expected a JSON document", code="invalid_body", field="body"
        )
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    where = "body"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BadInputError(
            f"body is not UTF-8 text: invalid byte at position {error.start}",
            code="invalid_body",
            field="body",
        ) from None
    if mime == "application/x-www-form-urlencoded":
        form = parse_qs(text, keep_blank_values=True)
        if "payload" not in form:
            raise BadInputError(
                "body is form-encoded without a 'payload' field; send JSON, or a form whose "
                "'payload' field holds JSON",
                code="invalid_body",
                field="body",
            )
        text = form["payload"][0]
        where = "form field 'payload'"
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise BadInputError(
            f"{where} is not valid JSON: {error.msg} at line {error.lineno} column "
            f"{error.colno} (char {error.pos})",
            code="invalid_body",
            field="body",
        ) from None
    except ValueError as error:  # NaN / Infinity: not JSON, and no database can store it
        raise BadInputError(f"{where} is not valid JSON: {error}", code="invalid_body") from None
    except RecursionError:
        raise BadInputError(
            f"{where}: nested deeper than {MAX_DEPTH} levels (too deep to parse)",
            code="invalid_body",
            field="body",
        ) from None
    # The one definition of an acceptable payload: the receiver and the worker both get here.
    check_payload(document, where=where)
    return document


def routing_headers(webhook: WebhookConfig) -> frozenset[str]:
    """The header names (lower-cased) routing and signature checks read for a provider:
    kept verbatim when the stored headers are redacted (``workers.payloads``)."""
    refs = (webhook.event_type, webhook.delivery_id, webhook.connection)
    names = {ref.header for ref in refs if ref is not None and ref.header is not None}
    # Every scheme's signature header is a MAC of the body (never the secret itself).
    names.update(
        name for name in (webhook.signature.header, webhook.signature.timestamp_header) if name
    )
    return frozenset(name.lower() for name in names)


def lookup(document: Any, path: str | None, default: Any = None) -> Any:
    """Return the value at dotted ``path`` (keys and array indexes), or ``default``."""
    value = _lookup(document, path)
    return default if value is _MISSING else value


def header_value(headers: Mapping[str, str], name: str) -> str | None:
    """Header ``name`` in any case, stripped; None when absent or blank."""
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    if value is None or not str(value).strip():
        return None
    return str(value).strip()


def split_batch(body: Any, batch: FieldRef | None) -> list[Any]:
    """The events inside ``body``: ``[body]`` unless the provider batches events.

    Raises:
        BadInputError: code ``invalid_batch`` when the configured path holds no array.
    """
    if batch is None:
        return [body]
    if batch.header is not None or batch.path is None:
        raise BadInputError(
            "webhook.batch must be a body path (e.g. {path: events}), not a header",
            code="invalid_batch",
        )
    events = _lookup(body, batch.path)
    if not isinstance(events, list):
        where = "the body" if _is_root(batch.path) else f"body path {batch.path!r}"
        raise BadInputError(
            f"expected a JSON array of events at {where} (webhook.batch), got {_kind(events)}",
            code="invalid_batch",
            field="batch",
        )
    return events


def event_type(
    webhook: WebhookConfig, headers: Mapping[str, str], event: Any, body: Any = None
) -> str | None:
    """The event's type from the configured header or path; None when absent."""
    return _text(_field(webhook.event_type, headers, event, body)[0])


def delivery_id(
    webhook: WebhookConfig,
    headers: Mapping[str, str],
    raw_body: bytes,
    event: Any,
    *,
    index: int | None = None,
    body: Any = None,
) -> str:
    """The dedupe key of ``event``: configured header/path, else sha256 hex of the raw body.

    Args:
        index: The event's position when a batch was split; ids that are not the event's
            own get ``:<index>`` appended so each event dedupes separately.
        body: The whole request body, when ``event`` is an element of it.
    """
    value, own = _field(webhook.delivery_id, headers, event, body)
    text = _text(value)
    if text is None:
        text, own = hashlib.sha256(raw_body).hexdigest(), False
    if len(text) > _MAX_DELIVERY_ID:
        text = hashlib.sha256(text.encode()).hexdigest()
    if index is not None and not own:
        text = f"{text}:{index}"
    return text


def connection_key(
    webhook: WebhookConfig, headers: Mapping[str, str], event: Any, body: Any = None
) -> str | None:
    """The value the connection route reads (body path or header) as a string; None when
    absent or no route is configured."""
    route = webhook.connection
    if route is None:
        return None
    ref = FieldRef(header=route.header, path=route.path)
    return _text(_field(ref, headers, event, body)[0])


def match_connection(
    key: str | None, route: ConnectionRoute | None, connections: Sequence[ConnectionInfo]
) -> list[str]:
    """Connection ids whose ``route.match`` field equals ``key`` (compared as strings).

    With no route, the integration's only connection matches when there is exactly one.
    """
    if route is None:
        return [connections[0][0]] if len(connections) == 1 else []
    if key is None:
        return []
    if route.match == "connection_id":
        return [cid for cid, _ in connections if cid == key]
    if not route.match.startswith("metadata."):
        return []
    path = route.match[len("metadata.") :]
    matched = []
    for cid, metadata in connections:
        value = _lookup(metadata, path)
        candidates = value if isinstance(value, list) else [value]
        if any(_text(candidate) == key for candidate in candidates):
            matched.append(cid)
    return matched


def matching_syncs(integration: IntegrationConfig, event_type: str | None) -> list[str]:
    """Names of the integration's syncs subscribed to ``event_type``, in config order."""
    return [name for name, sync in integration.syncs.items() if sync.is_subscribed_to(event_type)]


def plan_event(
    integration: IntegrationConfig,
    headers: Mapping[str, str],
    raw_body: bytes,
    connections: Sequence[ConnectionInfo],
) -> EventPlan:
    """Decide everything about one received request; ``workers.events`` only persists the plan.

    Never raises for bad input: a malformed request yields a plan with ``rejection`` set.
    """
    webhook = integration.provider.webhook
    try:
        body = parse_body(raw_body, header_value(headers, "content-type"))
    except BadInputError as error:
        return EventPlan(
            delivery_id=delivery_id(webhook, headers, raw_body, None),
            body=None,
            routes=(),
            rejection=str(error),
        )
    request_id = delivery_id(webhook, headers, raw_body, body)
    try:
        events = split_batch(body, webhook.batch)
    except BadInputError as error:
        return EventPlan(request_id, body, (), rejection=str(error))
    routes: tuple[EventRoute, ...]
    if webhook.batch is None:
        routes = (_plan_one(integration, headers, raw_body, body, None, None, connections),)
    else:
        routes = tuple(
            _plan_one(integration, headers, raw_body, event, index, body, connections)
            for index, event in enumerate(events)
        )
    rejection = "the batch holds no events" if not routes else None
    return EventPlan(request_id, body, routes, rejection=rejection)


def _plan_one(
    integration: IntegrationConfig,
    headers: Mapping[str, str],
    raw_body: bytes,
    event: Any,
    index: int | None,
    body: Any,
    connections: Sequence[ConnectionInfo],
) -> EventRoute:
    webhook = integration.provider.webhook
    kind = event_type(webhook, headers, event, body)
    key = connection_key(webhook, headers, event, body)
    connection_ids = tuple(match_connection(key, webhook.connection, connections))
    syncs = tuple(matching_syncs(integration, kind))
    problem, rejected = _problem(integration, kind, key, connection_ids, syncs, len(connections))
    return EventRoute(
        index=index,
        payload=event,
        delivery_id=delivery_id(webhook, headers, raw_body, event, index=index, body=body),
        event_type=kind,
        connection_key=key,
        connection_ids=connection_ids,
        sync_names=syncs,
        problem=problem,
        rejected=rejected,
    )


def _problem(
    integration: IntegrationConfig,
    kind: str | None,
    key: str | None,
    connection_ids: tuple[str, ...],
    syncs: tuple[str, ...],
    connection_count: int,
) -> tuple[str | None, bool]:
    """Why an event runs nothing, and whether that makes it rejected rather than unrouted."""
    webhook = integration.provider.webhook
    if not integration.syncs:
        return f"integration {integration.key!r} has no syncs", False
    if not syncs and kind is None:
        ref = webhook.event_type
        if ref is None:
            reason = (
                f"providers.{integration.key}.webhook.event_type is not configured and no "
                "sync subscribes to '*'"
            )
        elif ref.header:
            reason = f"header {ref.header!r} is missing"
        else:
            if len(ref.paths) == 1:
                reason = f"body path {ref.path!r} holds no event type"
            else:
                tried = ", ".join(repr(path) for path in ref.paths)
                reason = f"none of the body paths {tried} holds an event type"
        return f"no event type: {reason}", True
    if not syncs:
        return f"no sync of {integration.key!r} subscribes to event type {kind!r}", False
    if not connection_ids:
        route = webhook.connection
        if route is None:
            return (
                f"no connection: providers.{integration.key}.webhook.connection is not "
                f"configured and {connection_count} connections exist (without a route an "
                "event goes to the only connection)",
                False,
            )
        if key is None:
            if route.header:
                return f"no connection: header {route.header!r} is missing", False
            return f"no connection: body path {route.path!r} holds no value", False
        return f"no connection has {route.match} == {key!r}", False
    return None, False


def _field(
    ref: FieldRef | None, headers: Mapping[str, str], event: Any, body: Any
) -> tuple[Any, bool]:
    """The value ``ref`` points at, and whether it came from the event itself."""
    if ref is None:
        return None, False
    if ref.header is not None:
        return header_value(headers, ref.header), False
    # Fallback paths are tried only once the earlier ones hold nothing, in the event and
    # then the envelope: a batch event's own ``type`` wins over the envelope's.
    for path in ref.paths:
        value = _lookup(event, path)
        if value is not _MISSING and value is not None:
            return value, True
        if body is not None and body is not event:
            value = _lookup(body, path)
            if value is not _MISSING and value is not None:
                return value, False
    return None, False


def _lookup(document: Any, path: str | None) -> Any:
    if path is None:
        return _MISSING
    if _is_root(path):
        return document
    if path.startswith("$."):
        path = path[2:]
    current = document
    for part in path.split("."):
        if isinstance(current, Mapping):
            if part not in current:
                return _MISSING
            current = current[part]
        elif isinstance(current, list) and _is_index(part):
            position = int(part)
            if not -len(current) <= position < len(current):
                return _MISSING
            current = current[position]
        else:
            return _MISSING
    return current


def _is_root(path: str) -> bool:
    return path.strip() in {"", "$"}


def _is_index(part: str) -> bool:
    return part.lstrip("-").isdigit()


def _text(value: Any) -> str | None:
    """A scalar as the string routing compares; None for absent, null and containers."""
    if value is None or value is _MISSING or isinstance(value, Mapping | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text if text else None


def _kind(value: Any) -> str:
    if value is _MISSING:
        return "nothing"
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    return "a number"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")
