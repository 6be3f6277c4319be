"""Every built-in webhook preset, end to end: a signed request shaped like the provider's
documented example goes through ``POST /webhook/<integration>`` of a real deployment
(gunicorn, a Celery worker, beat, the embedded Redis, SQLite), and the sync of the right
one of two connections records the payload it was handed.

One deployment serves all seven presets (module scope). Each integration has one sync,
subscribed to everything, whose webhook handler saves the payload it got as a ``Hook``
record on its own connection; the test reads it back through the records API.

Payload shapes and headers follow the providers' documentation: GitHub's ``issues`` event
of a GitHub App, Stripe's Connect ``customer.created`` event, Slack's Events API
``event_callback``, Shopify's ``orders/create``, HubSpot's v3 batch of CRM changes,
Linear's ``Issue`` data change, and a Standard Webhooks message signed by the reference
library.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from demo.stack import Stack
from tests.support.auth import bearer
from tests.support.integrations import write_integrations
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e

API_KEY = "presets-e2e-key"
PRESETS = ("github", "stripe", "slack", "shopify", "hubspot", "linear", "standard-webhooks")
SECRETS = {name: f"{name}-webhook-secret" for name in PRESETS}
# Standard Webhooks secrets are "whsec_" + base64 of the key bytes.
SECRETS["standard-webhooks"] = "whsec_" + base64.b64encode(b"standard-webhooks-key").decode()

#: The script of every sync: record the payload it was handed, on its own connection.
SCRIPT = """\
import hashlib
import json


def fetch_data(nango):
    pass


def on_webhook_payload_received(nango, payload):
    text = json.dumps(payload, sort_keys=True)
    record = {
        "id": hashlib.sha256(text.encode()).hexdigest(),
        "connection": nango.connection_id,
        "payload": payload,
    }
    nango.batch_save([record], "Hook")
"""

#: preset -> (metadata key, value of connection "a", value of connection "b").
METADATA = {
    "github": ("installation_id", 41_000_001, 41_000_002),
    "stripe": ("account", "acct_1Aaaaaaaaaaaaaaa", "acct_1Bbbbbbbbbbbbbbb"),
    "slack": ("team_id", "T0AAAAAAA", "T0BBBBBBB"),
    "shopify": ("shop_domain", "alpha-store.myshopify.com", "beta-store.myshopify.com"),
    "hubspot": ("portalId", 62515, 62516),
    "linear": ("organizationId", "5b7b5a3e-aaaa-4d1e-8f2c-0c1d2e3f4a5b",
               "9c8d7e6f-bbbb-4a3b-9c1d-2e3f4a5b6c7d"),
    "standard-webhooks": ("account_id", "acc_alpha", "acc_beta"),
}  # fmt: skip


def nango_yaml() -> str:
    integrations = {
        name: {
            "syncs": {
                "hooks": {"runs": "every 1 day", "output": "Hook", "webhook-subscriptions": ["*"]}
            }
        }
        for name in PRESETS
    }
    providers = {name: {"preset": name, "webhook_secret": SECRETS[name]} for name in PRESETS}
    document = {
        "integrations": integrations,
        "models": {"Hook": {"id": "string", "connection": "string", "payload": "object"}},
        "providers": providers,
    }
    return json.dumps(document, indent=2)  # JSON is YAML


@dataclass
class Presets:
    stack: Stack

    @property
    def url(self) -> str:
        return self.stack.base_url

    def get(self, path: str, **kwargs: Any) -> Any:
        response = requests.get(f"{self.url}{path}", headers=bearer(API_KEY), timeout=10, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    def hooks(self, integration: str, connection_id: str) -> list[dict[str, Any]]:
        response = requests.get(
            f"{self.url}/records",
            params={"model": "Hook"},
            headers={**bearer(API_KEY), "Connection-Id": connection_id,
                     "Provider-Config-Key": integration},
            timeout=10,
        )  # fmt: skip
        assert response.status_code == 200, response.text
        return list(response.json()["records"])

    def event(self, event_id: str, *, until: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The stored event, once ``until`` holds for it (within 60 s)."""
        deadline = time.monotonic() + 60
        while True:
            response = requests.get(
                f"{self.url}/webhooks/events/{event_id}", headers=bearer(API_KEY), timeout=10
            )
            if response.status_code == 200 and until(response.json()):
                return dict(response.json())
            assert time.monotonic() < deadline, f"event {event_id}: {response.text}"
            time.sleep(0.2)


@pytest.fixture(scope="module")
def presets() -> Iterator[Presets]:
    with tempfile.TemporaryDirectory(prefix="hooksync-presets-") as folder:
        integrations = write_integrations(Path(folder) / "integrations", nango_yaml(), SCRIPT)
        env = {
            "HOOKSYNC_VAR_DIR": str(Path(folder) / "var"),
            "HOOKSYNC_INTEGRATIONS_DIR": str(integrations),
            "HOOKSYNC_REDIS_URL": "",  # the embedded default
            "HOOKSYNC_DATABASE_URL": "",  # SQLite under the var dir
            "HOOKSYNC_PORT": str(free_port()),
            "HOOKSYNC_SECRET_KEY": API_KEY,
            "HOOKSYNC_WEBHOOK_SIGNING_KEY": "presets-signing-key",
            "HOOKSYNC_TICK_SECONDS": "1",
        }
        stack = Stack(env, log_dir=Path(folder) / "logs")
        try:
            stack.start()
            for name in PRESETS:
                key, *values = METADATA[name]
                for suffix, value in zip("ab", values, strict=True):
                    response = requests.post(
                        f"{stack.base_url}/connections",
                        json={
                            "provider_config_key": name,
                            "connection_id": f"{name}-{suffix}",
                            "credentials": {"type": "NONE"},
                            "metadata": {key: value},
                        },
                        headers=bearer(API_KEY),
                        timeout=10,
                    )
                    assert response.status_code == 201, response.text
            yield Presets(stack)
        except BaseException:
            for name in ("web", "worker", "beat"):
                print(f"--- {name} log ---\n{stack.tail(name, 80)}")
            raise
        finally:
            stack.stop()


# --- what each provider sends ------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    body: bytes
    headers: dict[str, str]


def _hmac(secret: str | bytes, content: bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, content, hashlib.sha256).digest()


def _json(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def github(installation: object, url: str) -> Request:
    body = _json({
        "action": "opened",
        "issue": {"id": 1, "number": 1347, "title": "Found a bug", "state": "open",
                  "user": {"login": "octocat", "id": 1}},
        "repository": {"id": 1296269, "name": "Hello-World", "full_name": "octocat/Hello-World"},
        "sender": {"login": "octocat", "id": 1},
        "installation": {"id": installation, "node_id": "MDIzOkludGVncmF0aW9uSW5zdGFsbGF0aW9uMQ=="},
    })  # fmt: skip
    signature = "sha256=" + _hmac(SECRETS["github"], body).hex()
    return Request(body, {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/044aadd",
        "X-GitHub-Event": "issues",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "292430182",
        "X-Hub-Signature-256": signature,
    })  # fmt: skip


def stripe(account: object, url: str) -> Request:
    body = _json({
        "id": f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "account": account,
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "data": {"object": {"id": "cus_NffrFeUfNV2Hib", "object": "customer",
                            "email": "jennyrosen@example.com", "name": "Jenny Rosen"}},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": "req_1", "idempotency_key": None},
        "type": "customer.created",
    })  # fmt: skip
    stamp = str(int(time.time()))
    signature = _hmac(SECRETS["stripe"], stamp.encode() + b"." + body).hex()
    return Request(body, {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        "Stripe-Signature": f"t={stamp},v1={signature}",
    })  # fmt: skip


def slack_body(team: object, event_id: str) -> bytes:
    return _json({
        "token": "Jhj5dZrVaK7ZwHHjRyZWjbDl",
        "team_id": team,
        "api_app_id": "A0MDYCDME",
        "event": {"type": "app_mention", "user": "U061F7AUR",
                  "text": "<@U0LAN0Z89> is it everything?", "ts": "1515449522.000016",
                  "channel": "C0LAN2Q65", "event_ts": "1515449522000016"},
        "type": "event_callback",
        "event_id": event_id,
        "event_time": 1515449522000016,
        "authed_users": ["U0LAN0Z89"],
    })  # fmt: skip


def slack_signed(body: bytes, **headers: str) -> Request:
    stamp = str(int(time.time()))
    signature = "v0=" + _hmac(SECRETS["slack"], f"v0:{stamp}:".encode() + body).hex()
    return Request(body, {
        "Content-Type": "application/json",
        "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature,
        **headers,
    })  # fmt: skip


def slack(team: object, url: str) -> Request:
    return slack_signed(slack_body(team, f"Ev{uuid.uuid4().hex[:10].upper()}"))


def shopify(shop: object, url: str) -> Request:
    # An orders/create body does not name the shop: only the header routes it.
    body = _json({
        "id": 820982911946154508,
        "admin_graphql_api_id": "gid://shopify/Order/820982911946154508",
        "email": "jon@example.com",
        "created_at": "2026-12-01T05:00:00-05:00",
        "currency": "USD",
        "total_price": "403.00",
        "line_items": [{"id": 866550311766439020, "title": "IPod Nano - 8GB", "quantity": 1,
                        "price": "199.00"}],
    })  # fmt: skip
    signature = base64.b64encode(_hmac(SECRETS["shopify"], body)).decode()
    return Request(body, {
        "Content-Type": "application/json",
        "X-Shopify-Topic": "orders/create",
        "X-Shopify-Hmac-Sha256": signature,
        "X-Shopify-Shop-Domain": str(shop),
        "X-Shopify-API-Version": "2025-01",
        "X-Shopify-Webhook-Id": str(uuid.uuid4()),
        "X-Shopify-Event-Id": str(uuid.uuid4()),
        "X-Shopify-Triggered-At": "2026-12-01T10:00:00.000000Z",
    })  # fmt: skip


def hubspot(portal: object, url: str) -> Request:
    event_id = int(uuid.uuid4().int % 10**9)
    body = _json([{
        "eventId": event_id,
        "subscriptionId": 2381,
        "portalId": portal,
        "appId": 1160452,
        "occurredAt": int(time.time() * 1000),
        "subscriptionType": "contact.propertyChange",
        "attemptNumber": 0,
        "objectId": 123,
        "changeSource": "CRM",
        "propertyName": "firstname",
        "propertyValue": "sample-value",
    }])  # fmt: skip
    stamp = str(int(time.time() * 1000))
    content = b"POST" + url.encode() + body + stamp.encode()
    return Request(body, {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": base64.b64encode(_hmac(SECRETS["hubspot"], content)).decode(),
        "X-HubSpot-Request-Timestamp": stamp,
    })  # fmt: skip


def linear_body(organization: object, sent_at: float) -> bytes:
    return _json({
        "action": "create",
        "actor": {"id": "2e6eea91-1111-0000-9486-acea0603064d", "name": "Jane", "type": "user"},
        "createdAt": "2026-12-01T10:00:00.000Z",
        "data": {"id": "2174add1-f7c8-44e3-bbf3-2d60b5ea8bc9", "identifier": "ENG-42",
                 "title": "Fix login redirect", "teamId": "72b2a2dc-6f4f-4423-9d34-24b5bd10634a"},
        "url": "https://linear.app/acme/issue/ENG-42/fix-login-redirect",
        "type": "Issue",
        "organizationId": organization,
        "webhookTimestamp": int(sent_at * 1000),
        "webhookId": "000042e3-d123-4980-b49f-8e140eef9329",
    })  # fmt: skip


def linear_signed(body: bytes) -> Request:
    return Request(body, {
        "Content-Type": "application/json; charset=utf-8",
        "User-Agent": "Linear-Webhook",
        "Linear-Delivery": str(uuid.uuid4()),
        "Linear-Event": "Issue",
        "Linear-Signature": _hmac(SECRETS["linear"], body).hex(),
    })  # fmt: skip


def linear(organization: object, url: str) -> Request:
    return linear_signed(linear_body(organization, time.time()))


def standard_webhooks(account: object, url: str) -> Request:
    body = _json({
        "type": "invoice.paid",
        "timestamp": datetime.now(UTC).isoformat(),
        "data": {"id": "inv_1042", "account_id": account, "amount": 4200, "currency": "eur"},
    })  # fmt: skip
    msg_id, now = f"msg_{uuid.uuid4().hex}", datetime.now(UTC)
    # Signed by the reference library, not by our code.
    signature = Webhook(SECRETS["standard-webhooks"]).sign(msg_id, now, body.decode())
    return Request(body, {
        "Content-Type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    })  # fmt: skip


SENDERS: dict[str, Callable[[object, str], Request]] = {
    "github": github,
    "stripe": stripe,
    "slack": slack,
    "shopify": shopify,
    "hubspot": hubspot,
    "linear": linear,
    "standard-webhooks": standard_webhooks,
}


def send(presets: Presets, integration: str, request: Request) -> requests.Response:
    return requests.post(
        f"{presets.url}/webhook/{integration}",
        data=request.body,
        headers=request.headers,
        timeout=10,
    )


def routed_payload(body: bytes, integration: str) -> Any:
    """What the script is handed: the body, or for HubSpot's batch its one event."""
    document = json.loads(body)
    return document[0] if integration == "hubspot" else document


# --- the tests ---------------------------------------------------------------------------


def test_every_preset_has_a_sender() -> None:
    assert set(SENDERS) == set(PRESETS) == set(METADATA)


@pytest.mark.parametrize("integration", PRESETS)
def test_a_signed_webhook_runs_the_sync_of_the_right_connection(
    presets: Presets, integration: str
) -> None:
    _key, _a_value, b_value = METADATA[integration]
    request = SENDERS[integration](b_value, f"{presets.url}/webhook/{integration}")
    response = send(presets, integration, request)
    assert response.status_code == 202, response.text
    event_id = response.json()["id"]

    event = presets.event(event_id, until=lambda e: e["state"] == "processed")
    assert [run["connection_id"] for run in event["runs"]] == [f"{integration}-b"]
    assert [run["state"] for run in event["runs"]] == ["success"]

    expected = routed_payload(request.body, integration)
    records = presets.hooks(integration, f"{integration}-b")
    assert [r["payload"] for r in records if r["payload"] == expected] == [expected]
    assert all(r["connection"] == f"{integration}-b" for r in records)
    # The other connection's sync never saw it.
    assert all(r["payload"] != expected for r in presets.hooks(integration, f"{integration}-a"))


@pytest.mark.parametrize("integration", PRESETS)
def test_a_tampered_webhook_is_refused_at_the_door(presets: Presets, integration: str) -> None:
    _key, a_value, _b_value = METADATA[integration]
    request = SENDERS[integration](a_value, f"{presets.url}/webhook/{integration}")
    tampered = Request(request.body.replace(b"}", b" }", 1), request.headers)
    response = send(presets, integration, tampered)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "invalid_signature"


def test_a_slack_retry_of_the_same_event_is_a_duplicate_without_a_second_run(
    presets: Presets,
) -> None:
    _key, _a, team = METADATA["slack"]
    body = slack_body(team, f"Ev{uuid.uuid4().hex[:10].upper()}")
    first = send(presets, "slack", slack_signed(body))
    assert first.status_code == 202, first.text
    presets.event(first.json()["id"], until=lambda e: e["state"] == "processed")

    # Slack re-sends when it got no 2xx within 3 s: same body and event_id, a fresh
    # signature, and the retry headers.
    retry = slack_signed(body, **{"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"})
    second = send(presets, "slack", retry)
    assert 200 <= second.status_code < 300, second.text
    duplicate = presets.event(second.json()["id"], until=lambda e: e["state"] != "received")
    assert duplicate["state"] == "duplicate" and duplicate["runs"] == []


def test_a_linear_webhook_sent_over_a_minute_ago_is_refused(presets: Presets) -> None:
    _key, _a, organization = METADATA["linear"]
    stale = linear_signed(linear_body(organization, time.time() - 61))
    response = send(presets, "linear", stale)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "stale_timestamp"
    fresh = linear_signed(linear_body(organization, time.time() - 30))
    assert send(presets, "linear", fresh).status_code == 202
