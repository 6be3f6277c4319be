"""Signatures on the webhooks hooksync sends to the app (ARCHITECTURE.md §8). Pure, no I/O.

Every delivery carries three signatures over the exact body bytes, so an app can verify it
with whatever it already has:

- ``X-Nango-Hmac-Sha256``: hex HMAC-SHA256 keyed with the signing key. This is the header the
  official Nango Node client's ``verifyIncomingWebhookRequest(body, headers)`` checks
  (``createHmac('sha256', key).update(body).digest('hex')``; the header name is matched
  case-insensitively, and a request without it fails even when ``X-Nango-Signature`` is
  present).
- ``X-Nango-Signature``: the legacy hex SHA-256 of ``key + body`` that Nango's older
  ``verifyWebhookSignature`` checks. It is a plain hash, not an HMAC, and only kept for
  apps written against it.
- Standard Webhooks (``webhook-id``, ``webhook-timestamp``, ``webhook-signature``): one
  ``v1,<base64 HMAC-SHA256>`` entry per active key, so an app can rotate its secret
  without dropping a delivery. The HMAC key is the UTF-8 bytes of the signing key, hence
  the app's Standard Webhooks secret is ``whsec_`` + base64(signing key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence

__all__ = [
    "legacy_signature",
    "nango_hmac",
    "nango_hmac_signature",
    "signed_headers",
    "standard_webhook_headers",
    "whsec_secret",
]

#: The Standard Webhooks secret prefix (what ``standardwebhooks.Webhook`` strips).
WHSEC_PREFIX = "whsec_"


def nango_hmac_signature(key: str, body: bytes) -> str:
    """Return the ``X-Nango-Hmac-Sha256`` value: hex HMAC-SHA256 of ``body`` keyed by ``key``."""
    return hmac.new(key.encode("utf-8"), body, hashlib.sha256).hexdigest()


#: The name the internal contract uses.
nango_hmac = nango_hmac_signature


def legacy_signature(key: str, body: bytes) -> str:
    """Return the legacy ``X-Nango-Signature`` value: hex SHA-256 of ``key`` then ``body``."""
    return hashlib.sha256(key.encode("utf-8") + body).hexdigest()


def whsec_secret(key: str) -> str:
    """Return the Standard Webhooks secret an app configures to verify our signatures."""
    return WHSEC_PREFIX + base64.b64encode(key.encode("utf-8")).decode("ascii")


def standard_webhook_headers(
    keys: Sequence[str], webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Return the Standard Webhooks headers for one attempt.

    Args:
        keys: Every active signing key; each gets its own ``v1,`` entry, first key first.
        webhook_id: The message id, the same on every retry so the app can dedupe.
        timestamp: Unix seconds of this attempt (apps reject ones older than ~5 minutes,
            so each retry is signed afresh).
        body: The exact bytes sent.

    Raises:
        ValueError: If no key is given.
    """
    if not keys:
        raise ValueError("standard_webhook_headers needs at least one signing key, got none")
    signed = f"{webhook_id}.{int(timestamp)}.".encode() + body
    signatures = []
    for key in keys:
        digest = hmac.new(key.encode("utf-8"), signed, hashlib.sha256).digest()
        signatures.append("v1," + base64.b64encode(digest).decode("ascii"))
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(timestamp)),
        "webhook-signature": " ".join(signatures),
    }


def signed_headers(
    keys: Sequence[str], webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    """Return every header of one delivery attempt: content type and all three signatures.

    The Nango headers use the first key (the one apps configure in the Nango client); the
    Standard Webhooks signature lists every key.
    """
    if not keys:
        raise ValueError("signed_headers needs at least one signing key, got none")
    first = keys[0]
    return {
        "Content-Type": "application/json",
        "X-Nango-Hmac-Sha256": nango_hmac_signature(first, body),
        "X-Nango-Signature": legacy_signature(first, body),
        **standard_webhook_headers(keys, webhook_id, timestamp, body),
    }
