"""Behind a TLS-terminating proxy: HubSpot v3 signs the public https:// URL it called while
the app sees the proxy's internal request (ingress/proxy.py, HOOKSYNC_TRUSTED_PROXIES and
HOOKSYNC_PUBLIC_URL). The receiver runs on a real Redis, through ``create_app``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from cache.context import AppContext
from config.settings import load_settings
from ingress.app import create_app
from tests.support.integrations import write_integrations
from workers import inbox

SECRET = "hubspot-client-secret"
PROXY, STRANGER = "10.0.0.5", "203.0.113.9"
PUBLIC = "https://hooks.example.com"

NANGO_YAML = f"""
integrations:
  hubspot:
    syncs:
      contacts: {{runs: every 1h, output: Contact, webhook-subscriptions: ['*']}}
models:
  Contact: {{id: string}}
providers:
  hubspot:
    preset: hubspot
    webhook_secret: {SECRET}
"""

#: HubSpot's documented batch shape: one change to contact 123 of portal 62515.
BODY = json.dumps(
    [
        {
            "eventId": 1,
            "subscriptionId": 2,
            "portalId": 62515,
            "occurredAt": 1564113600000,
            "subscriptionType": "contact.propertyChange",
            "attemptNumber": 0,
            "objectId": 123,
            "changeSource": "CRM",
            "propertyName": "firstname",
            "propertyValue": "sample-value",
        }
    ]
).encode()


def hubspot_headers(url: str, body: bytes = BODY, method: str = "POST") -> dict[str, str]:
    """What HubSpot sends: v3 signature over method + the URL it called + body + time (ms)."""
    stamp = str(int(time.time() * 1000))
    content = method.encode() + url.encode() + body + stamp.encode()
    digest = hmac.new(SECRET.encode(), content, hashlib.sha256).digest()
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": base64.b64encode(digest).decode(),
        "X-HubSpot-Request-Timestamp": stamp,
    }


@pytest.fixture
def make_client(make_env, tmp_path: Path) -> Iterator[Callable[..., FlaskClient]]:
    """A receiver built with extra settings; its database is never opened."""
    folder = write_integrations(tmp_path / "integrations", NANGO_YAML)
    contexts: list[AppContext] = []

    def build(**settings: str) -> FlaskClient:
        env = make_env(
            HOOKSYNC_INTEGRATIONS_DIR=str(folder),
            HOOKSYNC_DATABASE_URL="sqlite:////dev/null/hooksync/nowhere.db",
            **settings,
        )
        contexts.append(AppContext(load_settings(env)))
        return create_app(contexts[-1], check_database=False).test_client()

    yield build
    for context in contexts:
        context.close()


def post(client: FlaskClient, path: str, headers: dict[str, str], peer: str) -> Any:
    """POST as the TCP peer ``peer`` to the app's internal address, as a proxy forwards."""
    return client.post(
        path,
        data=BODY,
        headers=headers,
        base_url="http://10.0.0.11:3003",
        environ_base={"REMOTE_ADDR": peer},
    )


FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hooks.example.com"}


def test_a_trusted_proxy_gives_back_the_public_url_hubspot_signed(
    make_client: Callable[..., FlaskClient],
) -> None:
    client = make_client(HOOKSYNC_TRUSTED_PROXIES="10.0.0.0/24")
    headers = {**hubspot_headers(f"{PUBLIC}/webhook/hubspot?source=crm"), **FORWARDED}
    response = post(client, "/webhook/hubspot?source=crm", headers, PROXY)
    assert response.status_code == 202, response.get_json()
    ctx: AppContext = client.application.extensions["hooksync"]
    (event,) = [json.loads(fields[b"e"]) for _, fields in ctx.redis.xrange(inbox.STREAM)]
    assert event["url"] == f"{PUBLIC}/webhook/hubspot?source=crm"


def test_forwarded_headers_from_an_untrusted_peer_are_ignored(
    make_client: Callable[..., FlaskClient],
) -> None:
    client = make_client(HOOKSYNC_TRUSTED_PROXIES="10.0.0.0/24")
    # A client reaching web directly cannot make its public-URL signature count...
    headers = {**hubspot_headers(f"{PUBLIC}/webhook/hubspot"), **FORWARDED}
    response = post(client, "/webhook/hubspot", headers, STRANGER)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_signature"
    # ...because its X-Forwarded-* changed nothing: the URL stays the one it connected to.
    forged = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
    headers = {**hubspot_headers("http://10.0.0.11:3003/webhook/hubspot"), **forged}
    assert post(client, "/webhook/hubspot", headers, STRANGER).status_code == 202


def test_without_trusted_proxies_no_forwarded_header_is_read(
    make_client: Callable[..., FlaskClient],
) -> None:
    client = make_client()
    headers = {**hubspot_headers(f"{PUBLIC}/webhook/hubspot"), **FORWARDED}
    assert post(client, "/webhook/hubspot", headers, PROXY).status_code == 401
    headers = {**hubspot_headers("http://10.0.0.11:3003/webhook/hubspot"), **FORWARDED}
    assert post(client, "/webhook/hubspot", headers, PROXY).status_code == 202


def test_the_public_url_setting_rebuilds_the_signed_url(
    make_client: Callable[..., FlaskClient],
) -> None:
    # The proxy maps https://hooks.example.com/hooksync/... to web's /..., headers or not.
    client = make_client(HOOKSYNC_PUBLIC_URL=f"{PUBLIC}/hooksync/")
    public = f"{PUBLIC}/hooksync/webhook/hubspot?source=crm"
    response = post(client, "/webhook/hubspot?source=crm", hubspot_headers(public), STRANGER)
    assert response.status_code == 202, response.get_json()
    internal = hubspot_headers("http://10.0.0.11:3003/webhook/hubspot?source=crm")
    response = post(client, "/webhook/hubspot?source=crm", internal, STRANGER)
    assert response.status_code == 401
