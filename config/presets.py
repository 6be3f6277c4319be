"""Built-in provider presets: data only, in the shape of a ``providers.<key>`` YAML entry.

A ``providers.<key>.preset: <name>`` entry is deep-merged *under* the keys written in
nango.yaml: anything spelled out there wins, key by key, at every depth. Each preset
follows the provider's documented webhook format and Nango's own routing for it.

Conventions:

* ``batch: {path: "$"}`` means the request body itself is a JSON array of events (HubSpot);
  any other path names an array inside the body.
* ``connection.match`` is ``connection_id`` or ``metadata.<key>``; presets match against
  connection metadata under the same name the provider uses, like Nango's connection
  config (e.g. HubSpot's ``portalId`` is compared with ``metadata.portalId``).
* ``connection`` reads a body ``path`` or a request ``header``: Shopify names the shop
  only in the ``X-Shopify-Shop-Domain`` header (most topics' bodies do not carry it).
* An event type ``path`` may be a list tried in order: Slack's Events API callbacks carry
  the type in ``event.type``, its interactivity and other payloads only in ``type``.
* Standard Webhooks defines the envelope (``type``, ``timestamp``, ``data``) but no tenant
  field; the preset routes by ``data.account_id`` against ``metadata.account_id``, the
  usual shape of a multi-tenant sender. Override ``connection`` for another key.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BATCH_ROOT",
    "MAX_TOLERANCE_SECONDS",
    "PRESETS",
    "REPLAY_SAFE_SCHEMES",
    "SIGNATURE_SCHEMES",
    "TIMESTAMP_HEADER_SCHEMES",
]

#: The ``batch.path`` meaning "the body is the array of events".
BATCH_ROOT = "$"

#: Names of the signature schemes ``ingress/provider_signatures.py`` implements. Kept here so the
#: loader can validate ``webhook.signature.scheme`` without importing the web package; a
#: unit test checks both lists stay equal.
SIGNATURE_SCHEMES: tuple[str, ...] = (
    "none",
    "hmac-sha256",
    "github",
    "stripe",
    "slack",
    "shopify",
    "hubspot-v3",
    "linear",
    "standard-webhooks",
)

#: Schemes whose signed content always carries a send time checked within
#: ``tolerance_seconds``, so a captured request is refused once stale (``signs_timestamp ==
#: "always"`` in ``ingress/provider_signatures.py``; a unit test keeps both equal).
#: ``hmac-sha256`` joins them when ``timestamp_header`` is set.
REPLAY_SAFE_SCHEMES: tuple[str, ...] = (
    "stripe",
    "slack",
    "hubspot-v3",
    "linear",
    "standard-webhooks",
)

#: Schemes that read the signed timestamp from a header named by ``timestamp_header``
#: (Stripe's is inside ``Stripe-Signature``, Linear's in the body).
TIMESTAMP_HEADER_SCHEMES: tuple[str, ...] = (
    "hmac-sha256",
    "slack",
    "hubspot-v3",
    "standard-webhooks",
)

#: The largest ``tolerance_seconds`` accepted: a day, well inside the delivery-id dedupe
#: window (7 days), so a replay keeping its delivery id is always caught by one or the other.
MAX_TOLERANCE_SECONDS = 86_400

#: preset name -> a ``providers.<key>`` entry (without ``preset`` and secrets).
PRESETS: dict[str, dict[str, Any]] = {
    "github": {
        "base_url": "https://api.github.com",
        "auth": {"type": "bearer"},
        "webhook": {
            "signature": {
                "scheme": "github",
                "header": "X-Hub-Signature-256",
                "encoding": "hex",
                "prefix": "sha256=",
            },
            "event_type": {"header": "X-GitHub-Event"},
            "delivery_id": {"header": "X-GitHub-Delivery"},
            # GitHub App deliveries name the installation; Nango keys GitHub App
            # connections by installation_id.
            "connection": {"path": "installation.id", "match": "metadata.installation_id"},
        },
    },
    "stripe": {
        "base_url": "https://api.stripe.com",
        "auth": {"type": "bearer"},
        "webhook": {
            "signature": {
                "scheme": "stripe",
                "header": "Stripe-Signature",
                "tolerance_seconds": 300,
            },
            "event_type": {"path": "type"},
            "delivery_id": {"path": "id"},
            # Connect events carry the connected account id ("acct_...").
            "connection": {"path": "account", "match": "metadata.account"},
        },
    },
    "slack": {
        "base_url": "https://slack.com/api",
        "auth": {"type": "bearer"},
        "webhook": {
            "signature": {
                "scheme": "slack",
                "header": "X-Slack-Signature",
                "timestamp_header": "X-Slack-Request-Timestamp",
                "tolerance_seconds": 300,
            },
            # Events API callbacks: event.type; interactivity, app_rate_limited: type.
            "event_type": {"path": ["event.type", "type"]},
            # A retry (X-Slack-Retry-Num) repeats the event_id, so it dedupes as a duplicate.
            "delivery_id": {"path": "event_id"},
            "connection": {"path": "team_id", "match": "metadata.team_id"},
        },
    },
    "shopify": {
        "auth": {"type": "header", "name": "X-Shopify-Access-Token"},
        "webhook": {
            "signature": {
                "scheme": "shopify",
                "header": "X-Shopify-Hmac-Sha256",
                "encoding": "base64",
            },
            "event_type": {"header": "X-Shopify-Topic"},
            "delivery_id": {"header": "X-Shopify-Webhook-Id"},
            "connection": {"header": "X-Shopify-Shop-Domain", "match": "metadata.shop_domain"},
        },
    },
    "hubspot": {
        "base_url": "https://api.hubapi.com",
        "auth": {"type": "bearer"},
        "webhook": {
            "signature": {
                "scheme": "hubspot-v3",
                "header": "X-HubSpot-Signature-v3",
                "encoding": "base64",
                "timestamp_header": "X-HubSpot-Request-Timestamp",
                "tolerance_seconds": 300,
            },
            # HubSpot posts a JSON array of events, each with its own type and portal.
            "batch": {"path": BATCH_ROOT},
            "event_type": {"path": "subscriptionType"},
            "delivery_id": {"path": "eventId"},
            "connection": {"path": "portalId", "match": "metadata.portalId"},
        },
    },
    "linear": {
        "base_url": "https://api.linear.app",
        "auth": {"type": "bearer"},
        "webhook": {
            "signature": {
                "scheme": "linear",
                "header": "Linear-Signature",
                "encoding": "hex",
                # Linear asks receivers to refuse a webhookTimestamp more than a minute off.
                "tolerance_seconds": 60,
            },
            "event_type": {"path": "type"},
            "delivery_id": {"header": "Linear-Delivery"},
            "connection": {"path": "organizationId", "match": "metadata.organizationId"},
        },
    },
    "standard-webhooks": {
        "auth": {"type": "bearer"},
        "webhook": {
            "signature": {
                "scheme": "standard-webhooks",
                "header": "webhook-signature",
                "encoding": "base64",
                "timestamp_header": "webhook-timestamp",
                "tolerance_seconds": 300,
            },
            "event_type": {"path": "type"},
            "delivery_id": {"header": "webhook-id"},
            "connection": {"path": "data.account_id", "match": "metadata.account_id"},
        },
    },
}
