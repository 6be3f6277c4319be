"""Routing decisions (workers/routing.py): pure, no I/O."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from config.errors import BadInputError
from config.integrations import (
    ConnectionRoute,
    FieldRef,
    IntegrationConfig,
    ProviderConfig,
    SyncConfig,
    WebhookConfig,
)
from config.providers import parse_providers
from workers.routing import (
    connection_key,
    delivery_id,
    event_type,
    header_value,
    lookup,
    match_connection,
    matching_syncs,
    parse_body,
    plan_event,
    routing_headers,
    split_batch,
)


def sync(name: str, *subscriptions: str) -> SyncConfig:
    return SyncConfig(
        name=name,
        integration="acme",
        runs="every 1h",
        interval_seconds=3600,
        webhook_subscriptions=subscriptions,
    )


def integration(webhook: WebhookConfig, *syncs: SyncConfig) -> IntegrationConfig:
    return IntegrationConfig(
        key="acme",
        syncs={s.name: s for s in syncs},
        provider=ProviderConfig(key="acme", webhook=webhook),
    )


TRACKER = WebhookConfig(
    event_type=FieldRef(header="X-Event"),
    connection=ConnectionRoute(path="workspace_id", match="metadata.workspace_id"),
    delivery_id=FieldRef(header="X-Delivery"),
)

HUBSPOT = WebhookConfig(
    event_type=FieldRef(path="subscriptionType"),
    connection=ConnectionRoute(path="portalId", match="metadata.portalId"),
    delivery_id=FieldRef(path="eventId"),
    batch=FieldRef(path="$"),
)


# --- parse_body -------------------------------------------------------------------------


def test_parse_body_reads_json() -> None:
    assert parse_body(b'{"a": [1, 2]}') == {"a": [1, 2]}


def test_parse_body_names_the_error_position() -> None:
    with pytest.raises(BadInputError) as caught:
        parse_body(b'{"a": 1,,}')
    assert caught.value.code == "invalid_body"
    assert "line 1 column 9" in str(caught.value)


@pytest.mark.parametrize("raw", [b"", b"   \n"])
def test_parse_body_refuses_an_empty_body(raw: bytes) -> None:
    with pytest.raises(BadInputError, match="empty"):
        parse_body(raw)


def test_parse_body_refuses_nan_which_no_database_stores() -> None:
    with pytest.raises(BadInputError, match="NaN"):
        parse_body(b'{"a": NaN}')


def test_parse_body_refuses_non_utf8() -> None:
    with pytest.raises(BadInputError, match="position 1"):
        parse_body(b'"\xff"')


def test_parse_body_accepts_a_slack_style_form_payload() -> None:
    raw = b"payload=%7B%22type%22%3A%22block_actions%22%7D"
    assert parse_body(raw, "application/x-www-form-urlencoded") == {"type": "block_actions"}


def test_parse_body_form_without_payload_is_refused() -> None:
    with pytest.raises(BadInputError, match="'payload'"):
        parse_body(b"a=1", "application/x-www-form-urlencoded; charset=utf-8")


# --- lookup / headers -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.b.0.c", 7),
        ("a.b.-1.c", 8),
        ("$.a.b.1.c", 8),
        ("a.b.2.c", None),
        ("a.x", None),
        ("a.b.c", None),
        ("", {"a": {"b": [{"c": 7}, {"c": 8}]}}),
        ("$", {"a": {"b": [{"c": 7}, {"c": 8}]}}),
    ],
)
def test_lookup_walks_keys_and_indexes(path: str, expected: object) -> None:
    assert lookup({"a": {"b": [{"c": 7}, {"c": 8}]}}, path) == expected


def test_header_value_ignores_case_and_blank() -> None:
    headers = {"x-event": " task.created ", "X-Empty": "  "}
    assert header_value(headers, "X-Event") == "task.created"
    assert header_value(headers, "x-empty") is None
    assert header_value(headers, "missing") is None


# --- split_batch ------------------------------------------------------------------------


def test_split_batch_without_batch_is_the_body() -> None:
    assert split_batch({"a": 1}, None) == [{"a": 1}]


@pytest.mark.parametrize("path", ["$", ""])
def test_split_batch_root_path_means_the_body_is_the_array(path: str) -> None:
    assert split_batch([{"a": 1}, {"a": 2}], FieldRef(path=path)) == [{"a": 1}, {"a": 2}]


def test_split_batch_inner_path() -> None:
    assert split_batch({"events": [1, 2]}, FieldRef(path="events")) == [1, 2]


def test_split_batch_refuses_a_non_array() -> None:
    with pytest.raises(BadInputError, match="'events'.*got an object") as caught:
        split_batch({"events": {"a": 1}}, FieldRef(path="events"))
    assert caught.value.code == "invalid_batch"


# --- event type / delivery id / connection key -----------------------------------------


def test_event_type_from_header_and_path() -> None:
    assert event_type(TRACKER, {"X-Event": "task.updated"}, {}) == "task.updated"
    webhook = WebhookConfig(event_type=FieldRef(path="event.type"))
    assert event_type(webhook, {}, {"event": {"type": "message"}}) == "message"
    assert event_type(webhook, {}, {"event": {}}) is None
    assert event_type(WebhookConfig(), {}, {"type": "x"}) is None


def test_delivery_id_defaults_to_the_body_hash() -> None:
    raw = b'{"a": 1}'
    assert delivery_id(WebhookConfig(), {}, raw, {"a": 1}) == hashlib.sha256(raw).hexdigest()


def test_delivery_id_from_header_falls_back_to_hash_when_missing() -> None:
    raw = b"{}"
    assert delivery_id(TRACKER, {"X-Delivery": "d-1"}, raw, {}) == "d-1"
    assert delivery_id(TRACKER, {}, raw, {}) == hashlib.sha256(raw).hexdigest()


def test_delivery_id_of_a_split_batch_dedupes_each_event() -> None:
    raw = b"[...]"
    body_hash = hashlib.sha256(raw).hexdigest()
    # No configured id: the body hash, suffixed by index.
    assert delivery_id(WebhookConfig(), {}, raw, {"x": 1}, index=2) == f"{body_hash}:2"
    # A header names the request, not the event: suffixed too.
    assert delivery_id(TRACKER, {"X-Delivery": "d"}, raw, {}, index=0) == "d:0"
    # The event's own id: no suffix needed.
    assert delivery_id(HUBSPOT, {}, raw, {"eventId": 42}, index=3) == "42"


def test_delivery_id_from_the_envelope_is_suffixed() -> None:
    webhook = WebhookConfig(delivery_id=FieldRef(path="id"), batch=FieldRef(path="events"))
    body = {"id": "req-9", "events": [{"n": 1}]}
    assert delivery_id(webhook, {}, b"x", body["events"][0], index=0, body=body) == "req-9:0"


def test_a_long_delivery_id_is_hashed_to_fit_the_column() -> None:
    value = "x" * 500
    result = delivery_id(TRACKER, {"X-Delivery": value}, b"{}", {})
    assert result == hashlib.sha256(value.encode()).hexdigest()


def test_connection_key_is_a_string() -> None:
    assert connection_key(HUBSPOT, {}, {"portalId": 12345}) == "12345"
    assert connection_key(HUBSPOT, {}, {"portalId": True}) == "true"
    assert connection_key(HUBSPOT, {}, {"portalId": {"a": 1}}) is None
    assert connection_key(HUBSPOT, {}, {}) is None
    assert connection_key(WebhookConfig(), {}, {"portalId": 1}) is None


def test_connection_key_falls_back_to_the_envelope() -> None:
    webhook = WebhookConfig(
        connection=ConnectionRoute(path="account"), batch=FieldRef(path="events")
    )
    body = {"account": "a1", "events": [{"n": 1}]}
    assert connection_key(webhook, {}, body["events"][0], body) == "a1"


# --- match_connection / matching_syncs --------------------------------------------------

CONNECTIONS = [
    ("c1", {"workspace_id": "w1", "portal": {"id": 7}}),
    ("c2", {"workspace_id": "w2", "portal": {"id": "8"}}),
    ("c3", {"workspace_id": ["w3", "w1"]}),
]


def test_match_connection_by_connection_id() -> None:
    route = ConnectionRoute(path="x", match="connection_id")
    assert match_connection("c2", route, CONNECTIONS) == ["c2"]
    assert match_connection("nope", route, CONNECTIONS) == []


def test_match_connection_by_metadata_compares_as_strings() -> None:
    assert match_connection("7", ConnectionRoute("p", "metadata.portal.id"), CONNECTIONS) == ["c1"]
    assert match_connection("8", ConnectionRoute("p", "metadata.portal.id"), CONNECTIONS) == ["c2"]


def test_match_connection_by_metadata_array_matches_any_element() -> None:
    route = ConnectionRoute("p", "metadata.workspace_id")
    assert match_connection("w1", route, CONNECTIONS) == ["c1", "c3"]


def test_match_connection_without_key_matches_nothing() -> None:
    assert match_connection(None, ConnectionRoute("p", "connection_id"), CONNECTIONS) == []


def test_without_a_route_the_only_connection_matches() -> None:
    assert match_connection(None, None, CONNECTIONS[:1]) == ["c1"]
    assert match_connection(None, None, CONNECTIONS) == []
    assert match_connection(None, None, []) == []


def test_matching_syncs_exact_and_star() -> None:
    config = integration(TRACKER, sync("tasks", "task.created"), sync("all", "*"), sync("none"))
    assert matching_syncs(config, "task.created") == ["tasks", "all"]
    assert matching_syncs(config, "other") == ["all"]
    assert matching_syncs(config, None) == ["all"]


# --- plan_event -------------------------------------------------------------------------


def test_plan_routes_one_event_to_its_connection_and_syncs() -> None:
    config = integration(TRACKER, sync("tasks", "task.created"))
    raw = json.dumps({"workspace_id": "w2", "task_id": 1}).encode()
    plan = plan_event(config, {"x-event": "task.created", "x-delivery": "d1"}, raw, CONNECTIONS)
    assert plan.rejection is None and plan.delivery_id == "d1"
    (route,) = plan.routes
    assert route.index is None and route.problem is None
    assert route.connection_ids == ("c2",) and route.sync_names == ("tasks",)
    assert route.payload == {"workspace_id": "w2", "task_id": 1}


def test_plan_rejects_an_unparsable_body_but_keeps_a_delivery_id() -> None:
    config = integration(TRACKER, sync("tasks", "*"))
    plan = plan_event(config, {"x-delivery": "d1"}, b"{oops", CONNECTIONS)
    assert plan.routes == () and "not valid JSON" in str(plan.rejection)
    assert plan.delivery_id == "d1"


def test_plan_rejects_a_missing_event_type_when_subscriptions_are_specific() -> None:
    config = integration(TRACKER, sync("tasks", "task.created"))
    plan = plan_event(config, {}, b'{"workspace_id": "w1"}', CONNECTIONS)
    (route,) = plan.routes
    assert route.rejected and "header 'X-Event' is missing" in str(route.problem)


def test_plan_star_subscription_needs_no_event_type() -> None:
    config = integration(TRACKER, sync("tasks", "*"))
    (route,) = plan_event(config, {}, b'{"workspace_id": "w1"}', CONNECTIONS).routes
    assert route.problem is None and route.connection_ids == ("c1", "c3")


def test_plan_unrouted_reasons_say_which_part_failed() -> None:
    config = integration(TRACKER, sync("tasks", "task.created"))
    headers = {"x-event": "task.created"}
    (no_conn,) = plan_event(config, headers, b'{"workspace_id": "w9"}', CONNECTIONS).routes
    assert not no_conn.rejected
    assert no_conn.problem == "no connection has metadata.workspace_id == 'w9'"
    (no_sync,) = plan_event(
        config, {"x-event": "task.archived"}, b'{"workspace_id": "w1"}', CONNECTIONS
    ).routes
    assert "subscribes to event type 'task.archived'" in str(no_sync.problem)
    assert no_sync.connection_ids == ("c1", "c3")  # still known, for forwarding


def test_plan_splits_a_batch_and_routes_each_event() -> None:
    config = integration(HUBSPOT, sync("contacts", "contact.creation"))
    connections = [("h1", {"portalId": 1}), ("h2", {"portalId": 2})]
    body = [
        {"eventId": 10, "portalId": 1, "subscriptionType": "contact.creation"},
        {"eventId": 11, "portalId": 2, "subscriptionType": "contact.creation"},
        {"eventId": 12, "portalId": 3, "subscriptionType": "contact.creation"},
    ]
    plan = plan_event(config, {}, json.dumps(body).encode(), connections)
    assert [r.index for r in plan.routes] == [0, 1, 2]
    assert [r.delivery_id for r in plan.routes] == ["10", "11", "12"]
    assert [r.connection_ids for r in plan.routes] == [("h1",), ("h2",), ()]
    assert plan.routes[2].problem == "no connection has metadata.portalId == '3'"
    assert plan.event_types == ("contact.creation",)


def test_plan_rejects_an_empty_batch() -> None:
    config = integration(HUBSPOT, sync("contacts", "*"))
    assert plan_event(config, {}, b"[]", []).rejection == "the batch holds no events"


@given(st.recursive(st.none() | st.integers() | st.text(), lambda c: st.lists(c, max_size=3)))
def test_plan_never_raises_on_any_json(value: object) -> None:
    config = integration(HUBSPOT, sync("contacts", "*"))
    plan = plan_event(config, {}, json.dumps(value).encode(), [("h1", {"portalId": 1})])
    assert plan.rejection is not None or all(r.delivery_id for r in plan.routes)


# --- presets: the routing each provider's preset sets up --------------------------------


class _Problems:
    """A ``ProblemReport`` that fails the test on the first problem."""

    def error(self, code: str, path: str, message: str) -> None:
        raise AssertionError(f"{path}: {message}")

    warn = error

    def expect(
        self, value: object, kinds: type | tuple[type, ...], path: str, expected: str
    ) -> bool:
        assert isinstance(value, kinds), f"{path}: expected {expected}, got {value!r}"
        return True

    def unknown_keys(self, raw: Mapping[Any, Any], known: frozenset[str], path: str) -> None:
        assert set(raw) <= known, f"{path}: unknown keys {set(raw) - known}"


def preset(name: str, **explicit: Any) -> WebhookConfig:
    entry = {"preset": name, "webhook_secret": "s", **explicit}
    providers = parse_providers({"acme": entry}, {"acme"}, {}, _Problems())
    return providers["acme"].webhook


def test_shopify_routes_by_the_shop_domain_header() -> None:
    webhook = preset("shopify")
    assert webhook.connection == ConnectionRoute(
        header="X-Shopify-Shop-Domain", match="metadata.shop_domain"
    )
    assert "x-shopify-shop-domain" in routing_headers(webhook)
    config = integration(webhook, sync("orders", "orders/create"))
    shops = [
        ("s1", {"shop_domain": "one.myshopify.com"}),
        ("s2", {"shop_domain": "two.myshopify.com"}),
    ]
    headers = {
        "x-shopify-topic": "orders/create",
        "x-shopify-shop-domain": "two.myshopify.com",
        "x-shopify-webhook-id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
    }
    # An orders/create body names no shop: only the header can route it.
    (route,) = plan_event(config, headers, b'{"id": 820982911946154508}', shops).routes
    assert route.connection_ids == ("s2",) and route.connection_key == "two.myshopify.com"
    del headers["x-shopify-shop-domain"]
    (route,) = plan_event(config, headers, b'{"id": 820982911946154508}', shops).routes
    assert route.connection_ids == ()
    assert route.problem == "no connection: header 'X-Shopify-Shop-Domain' is missing"


def test_a_path_written_in_the_file_replaces_the_presets_header() -> None:
    webhook = preset("shopify", webhook={"connection": {"path": "shop_domain"}})
    assert webhook.connection == ConnectionRoute(path="shop_domain", match="metadata.shop_domain")


def test_a_connection_route_reads_exactly_one_source() -> None:
    with pytest.raises(ValueError, match="exactly one of path or header"):
        ConnectionRoute(path="a", header="X-A")
    with pytest.raises(ValueError, match="exactly one of path or header"):
        ConnectionRoute()


def test_slack_event_type_falls_back_from_event_type_to_type() -> None:
    webhook = preset("slack")
    callback = {"type": "event_callback", "event_id": "Ev1", "event": {"type": "app_mention"}}
    interactive = {"type": "block_actions", "team": {"id": "T1"}}
    assert event_type(webhook, {}, callback) == "app_mention"
    assert event_type(webhook, {}, interactive) == "block_actions"
    # A null event.type is nothing, so the fallback applies.
    assert event_type(webhook, {}, {"type": "outer", "event": {"type": None}}) == "outer"


def test_slack_names_every_path_it_tried_when_none_holds_a_type() -> None:
    config = integration(preset("slack"), sync("messages", "message"))
    (route,) = plan_event(config, {}, b'{"team_id": "T1"}', [("c1", {"team_id": "T1"})]).routes
    assert route.rejected
    assert "none of the body paths 'event.type', 'type' holds an event type" in str(route.problem)


def test_slack_retries_keep_the_event_id_as_delivery_id() -> None:
    webhook = preset("slack")
    body = {"type": "event_callback", "event_id": "Ev08", "team_id": "T1", "event": {"type": "x"}}
    raw = json.dumps(body).encode()
    retry = {"x-slack-retry-num": "1", "x-slack-retry-reason": "http_timeout"}
    assert delivery_id(webhook, {}, raw, body) == delivery_id(webhook, retry, raw, body) == "Ev08"


def test_standard_webhooks_routes_by_the_account_in_data() -> None:
    webhook = preset("standard-webhooks")
    config = integration(webhook, sync("invoices", "invoice.paid"))
    accounts = [("a1", {"account_id": "acc_1"}), ("a2", {"account_id": "acc_2"})]
    raw = json.dumps({"type": "invoice.paid", "data": {"account_id": "acc_2"}}).encode()
    (route,) = plan_event(config, {"webhook-id": "msg_1"}, raw, accounts).routes
    assert route.connection_ids == ("a2",) and route.delivery_id == "msg_1"


def test_linear_preset_checks_webhook_timestamp_within_a_minute() -> None:
    assert preset("linear").signature.tolerance_seconds == 60


class _Collected(_Problems):
    """A ``ProblemReport`` that keeps the errors instead of failing."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, code: str, path: str, message: str) -> None:
        self.errors.append(f"{path}: {message}")

    def expect(
        self, value: object, kinds: type | tuple[type, ...], path: str, expected: str
    ) -> bool:
        if isinstance(value, kinds):
            return True
        self.error("invalid_type", path, f"expected {expected}, got {value!r}")
        return False


def parse_webhook(webhook: dict[str, Any]) -> tuple[WebhookConfig, list[str]]:
    report = _Collected()
    entry = {"webhook_secret": "s", "webhook": {"signature": "none", **webhook}}
    return parse_providers({"acme": entry}, {"acme"}, {}, report)["acme"].webhook, report.errors


def test_the_file_spells_header_routes_and_fallback_paths() -> None:
    webhook, errors = parse_webhook(
        {
            "connection": {"header": "X-Tenant", "match": "connection_id"},
            "event_type": {"path": ["event.type", "type"]},
        }
    )
    assert errors == []
    assert webhook.connection == ConnectionRoute(header="X-Tenant", match="connection_id")
    assert webhook.event_type == FieldRef(path="event.type", fallback_paths=("type",))


@pytest.mark.parametrize(
    ("webhook", "message"),
    [
        (
            {"connection": {"path": "a", "header": "X-A"}},
            "acme.webhook.connection: connection routing reads one value: give 'path' ('a') "
            "or 'header' ('X-A'), not both",
        ),
        ({"connection": {"header": 7}}, "acme.webhook.connection.header"),
        ({"event_type": {"path": ["event.type", ""]}}, "event_type.path[1]: expected a dotted"),
        ({"event_type": {"path": []}}, "event_type.path: expected at least one dotted path"),
    ],
)
def test_bad_routing_values_name_the_key_and_value(webhook: dict[str, Any], message: str) -> None:
    parsed, errors = parse_webhook(webhook)
    assert any(message in error for error in errors), errors
