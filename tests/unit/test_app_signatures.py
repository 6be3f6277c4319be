"""Signatures on outgoing webhooks, checked against independent verifiers (no I/O)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from workers.app_signatures import (
    legacy_signature,
    nango_hmac_signature,
    signed_headers,
    standard_webhook_headers,
    whsec_secret,
)

BODY = json.dumps({"from": "nango", "type": "sync", "model": "Tâche"}, ensure_ascii=False).encode()
OLD_KEY, NEW_KEY = "old-signing-key", "new-signing-kéy"


def test_nango_hmac_is_hex_hmac_sha256_of_the_raw_body() -> None:
    expected = hmac.new(OLD_KEY.encode(), BODY, hashlib.sha256).hexdigest()
    assert nango_hmac_signature(OLD_KEY, BODY) == expected
    assert nango_hmac_signature(OLD_KEY, BODY + b" ") != expected


def test_nango_hmac_matches_a_known_vector() -> None:
    # RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    assert nango_hmac_signature("Jefe", b"what do ya want for nothing?") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def test_legacy_signature_is_sha256_of_key_then_body() -> None:
    assert legacy_signature(OLD_KEY, BODY) == hashlib.sha256(OLD_KEY.encode() + BODY).hexdigest()
    assert legacy_signature(OLD_KEY, BODY) != nango_hmac_signature(OLD_KEY, BODY)


def test_whsec_secret_is_base64_of_the_key_bytes() -> None:
    secret = whsec_secret(NEW_KEY)
    assert secret.startswith("whsec_")
    assert base64.b64decode(secret.removeprefix("whsec_")) == NEW_KEY.encode()


@pytest.mark.parametrize("key", [OLD_KEY, NEW_KEY])
def test_standard_webhooks_verifies_with_each_rotation_key(key: str) -> None:
    headers = standard_webhook_headers([OLD_KEY, NEW_KEY], "msg_abc", int(time.time()), BODY)
    assert Webhook(whsec_secret(key)).verify(BODY, headers) == json.loads(BODY)


def test_standard_webhooks_lists_one_v1_entry_per_key() -> None:
    headers = standard_webhook_headers([OLD_KEY, NEW_KEY], "msg_abc", 1_700_000_000, BODY)
    entries = headers["webhook-signature"].split(" ")
    assert [entry.split(",")[0] for entry in entries] == ["v1", "v1"]
    assert headers["webhook-id"] == "msg_abc"
    assert headers["webhook-timestamp"] == "1700000000"


def test_standard_webhooks_rejects_another_key_and_a_tampered_body() -> None:
    headers = standard_webhook_headers([OLD_KEY], "msg_abc", int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(whsec_secret(NEW_KEY)).verify(BODY, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(whsec_secret(OLD_KEY)).verify(BODY.replace(b"sync", b"sinc"), headers)


def test_standard_webhooks_signature_covers_id_and_timestamp() -> None:
    now = int(time.time())
    headers = standard_webhook_headers([OLD_KEY], "msg_abc", now, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(whsec_secret(OLD_KEY)).verify(BODY, {**headers, "webhook-id": "msg_other"})
    with pytest.raises(WebhookVerificationError):
        Webhook(whsec_secret(OLD_KEY)).verify(BODY, {**headers, "webhook-timestamp": str(now - 1)})


def test_signed_headers_sign_nango_headers_with_the_first_key_only() -> None:
    headers = signed_headers([NEW_KEY, OLD_KEY], "msg_1", int(time.time()), BODY)
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Nango-Hmac-Sha256"] == nango_hmac_signature(NEW_KEY, BODY)
    assert headers["X-Nango-Signature"] == legacy_signature(NEW_KEY, BODY)
    for key in (NEW_KEY, OLD_KEY):
        Webhook(whsec_secret(key)).verify(BODY, headers)


def test_signing_without_a_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one signing key"):
        signed_headers([], "msg_1", 0, BODY)
