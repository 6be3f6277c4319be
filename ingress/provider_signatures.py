"""Signatures on the webhooks providers send us: one small class per provider format, no I/O.

Every scheme works on the raw request bytes (re-serialised JSON never matches), compares
in constant time, and accepts the request when any one of the configured secrets
verifies (secret rotation). Failures raise ``SignatureError``, whose message names the
header or the check that failed and never the secret or the expected digest.

Replays: a scheme whose signed content includes a timestamp refuses a captured request
once that timestamp is further than ``tolerance_seconds`` from now (``stale_timestamp``);
one that signs the body alone (GitHub, Shopify, generic ``hmac-sha256`` without
``timestamp_header``) accepts it at any time. ``SignatureScheme.signs_timestamp`` says which.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from config.errors import BadInputError
from config.integrations import SignatureConfig

__all__ = [
    "SCHEMES",
    "SignatureError",
    "SignatureScheme",
    "SignedRequest",
    "get_scheme",
    "sign_generic",
]

#: Timestamps above this are taken as milliseconds (1e11 s is the year 5138).
_MILLISECONDS_THRESHOLD = 100_000_000_000


class SignatureError(BadInputError):
    """A webhook's signature is missing, malformed, stale or does not verify (HTTP 401).

    ``code`` is ``invalid_signature``, or for the signed timestamp ``invalid_timestamp``
    (missing or not an integer) and ``stale_timestamp`` (outside the tolerance: a replay
    or a skewed clock).
    """

    def __init__(self, message: str, *, field: str | None = None, code: str = "invalid_signature"):
        super().__init__(message, code=code, field=field)


@dataclass(frozen=True)
class SignedRequest:
    """What a scheme needs from the incoming request, gathered once by ``verify``."""

    secrets: Sequence[str]
    body: bytes
    headers: Mapping[str, str]
    method: str
    url: str
    now: float

    def header(self, name: str) -> str:
        """Return the stripped value of header ``name`` (any case) or raise ``SignatureError``."""
        return _require_header(self.headers, name)


class SignatureScheme:
    """Base class: a named way of checking that a webhook came from its provider.

    Subclasses set ``name`` and implement ``check``; callers use ``verify``.
    """

    #: The name used in ``providers.<key>.webhook.signature.scheme``.
    name: ClassVar[str] = ""
    #: Whether the signed content carries a timestamp checked against ``tolerance_seconds``:
    #: ``always``, ``optional`` (with ``timestamp_header``) or ``never`` (replayable).
    signs_timestamp: ClassVar[Literal["always", "optional", "never"]] = "never"

    def verify(
        self,
        *,
        secrets: Sequence[str],
        body: bytes,
        headers: Mapping[str, str],
        method: str,
        url: str,
        now: float,
        config: SignatureConfig,
    ) -> None:
        """Return quietly when the request is authentic.

        Args:
            secrets: Active secrets; any one verifying is enough.
            body: The raw request body.
            headers: Request headers (looked up case-insensitively).
            method: HTTP method, as received.
            url: The full URL the provider called.
            now: Current Unix time in seconds, for timestamp tolerance.
            config: The provider's signature options.

        Raises:
            SignatureError: When a header is missing or malformed, a signed timestamp is
                outside the tolerance, or no secret verifies.
        """
        request = SignedRequest(secrets, body, headers, method, url, now)
        self.check(request, config)

    def check(self, request: SignedRequest, config: SignatureConfig) -> None:
        """Scheme-specific verification; raise ``SignatureError`` on failure."""
        raise NotImplementedError


class NoSignature(SignatureScheme):
    """Accept every request; for providers that do not sign (use only on trusted networks)."""

    name = "none"

    def check(self, request: SignedRequest, config: SignatureConfig) -> None:
        return None


class HmacSha256(SignatureScheme):
    """Generic HMAC-SHA256 of the body in one header, hex or base64, with an optional prefix.

    With ``timestamp_header`` set, the sender puts the current Unix time in that header
    (decimal seconds, or milliseconds when above 1e11) and signs the bytes of the header
    value exactly as sent, one ``.``, then the raw body: ``f"{timestamp}.{body}"``, as
    Stripe does. A missing or non-integer timestamp is ``invalid_timestamp``, one further
    than ``tolerance_seconds`` from now in either direction is ``stale_timestamp``.
    """

    name = "hmac-sha256"
    signs_timestamp = "optional"

    def check(self, request: SignedRequest, config: SignatureConfig) -> None:
        if not config.header:
            raise SignatureError(
                "scheme 'hmac-sha256' needs webhook.signature.header, the header that carries "
                "the signature",
            )
        signature = _strip_prefix(request.header(config.header), config.prefix, config.header)
        content = request.body
        if config.timestamp_header:
            timestamp = _require_timestamp(request.headers, config.timestamp_header)
            _check_timestamp(
                timestamp, config.timestamp_header, request.now, config.tolerance_seconds
            )
            content = timestamp.encode() + b"." + request.body
        provided = _decode(signature, config.encoding, config.header)
        _verify_any(request.secrets, lambda key: _hmac(key, content), [provided], config.header)


class _BodyHmac(SignatureScheme):
    """HMAC-SHA256 of the raw body in a fixed header: GitHub, Shopify, Linear."""

    default_header: ClassVar[str]
    encoding: ClassVar[Literal["hex", "base64"]]
    prefix: ClassVar[str] = ""

    def check(self, request: SignedRequest, config: SignatureConfig) -> None:
        header = config.header or self.default_header
        signature = _strip_prefix(request.header(header), self.prefix, header)
        provided = _decode(signature, self.encoding, header)
        _verify_any(request.secrets, lambda key: _hmac(key, request.body), [provided], header)


class GitHub(_BodyHmac):
    """``X-Hub-Signature-256: sha256=<hex>``."""

    name = "github"
    default_header = "X-Hub-Signature-256"
    encoding = "hex"
    prefix = "sha256="


class Shopify(_BodyHmac):
    """``X-Shopify-Hmac-Sha256: <base64>``."""

    name = "shopify"
    default_header = "X-Shopify-Hmac-Sha256"
    encoding = "base64"


class Linear(_BodyHmac):
    """``Linear-Signature: <hex>`` over the body, whose ``webhookTimestamp`` (ms) is checked.

    Linear puts the send time in the signed body rather than a header and asks receivers
    to check it against replays; it is read only once the signature has verified.
    """

    name = "linear"
    signs_timestamp = "always"
    default_header = "Linear-Signature"
    encoding = "hex"

    def check(self, request: SignedRequest, config: SignatureConfig) -> None:
        super().check(request, config)
        try:
            payload = json.loads(request.body)
        except (ValueError, RecursionError):
            payload = None
        stamp = payload.get("webhookTimestamp") if isinstance(payload, dict) else None
        if isinstance(stamp, bool) or not isinstance(stamp, int):
            raise SignatureError(
                "body has no integer 'webhookTimestamp' (ms), so the request cannot be "
                "checked for replay",
                field="webhookTimestamp",
                code="invalid_timestamp",
            )
        _check_timestamp(str(stamp), "webhookTimestamp", request.now, config.tolerance_seconds)


class Stripe(SignatureScheme):
    """``Stripe-Signature: t=<ts>,v1=<hex>[,v1=<hex>...]`` over ``f"{t}.{body}"``."""

    name = "stripe"
    signs_timestamp = "always"

    def check(self, request: SignedRequest, config: SignatureConfig) -> None:
        header = config.header or "Stripe-Signature"
        timestamp, candidates = _parse_stripe_header(request.header(header), header)
        _check_timestamp(timestamp, header + " t=", request.now, config.tolerance_seconds)
        content = timestamp.encode() + b"." + request.body
        provided = _decode_all(candidates, "hex", header)
        _verify_any(request.secrets, lambda key: _hmac(key, content), provided, header)


class Slack(SignatureScheme):
    """``X-Slack-Signature: v0=<hex>`` over ``f"v0:{X-Slack-Request-Timestamp}:{body}"``."""

    name = "slack"
    signs_timestamp = "always"

    def check(self, request: SignedRequest, config: SignatureConfig) -> None:
        header = config.header or "X-Slack-Signature"
        ts_header = config.timestamp_header or "X-Slack-Request-Timestamp"
        signature = _strip_prefix(request.header(header), "v0=", header)
        timestamp = _require_timestamp(request.headers, ts_header)
        _check_timestamp(timestamp, ts_header, request.now, config.tolerance_seconds)
        content = b"v0:" + timestamp.encode() + b":" + request.body
        provided = _decode(signature, "hex", header)
        _verify_any(request.secrets, lambda key: _hmac(key, content), [provided], header)


class HubSpotV3(SignatureScheme):
    """HubSpot v3: base64 HMAC of method + URI + body + ``X-HubSpot-Request-Timestamp`` (ms)."""

    name = "hubspot-v3"
    signs_timestamp = "always"

    #: HubSpot signs the URI with these escapes decoded (their documented list).
    _URI_DECODE: ClassVar[dict[str, str]] = {
        "%3A": ":",
        "%2F": "/",
        "%3F": "?",
        "%40": "@",
        "%21": "!",
        "%24": "$",
        "%27": "'",
        "%28": "(",
        "%29": ")",
        "%2A": "*",
        "%2C": ",",
        "%3B": ";",
    }

    def check(self, request: SignedRequest, config: SignatureConfig) -> None:
        header = config.header or "X-HubSpot-Signature-v3"
        ts_header = config.timestamp_header or "X-HubSpot-Request-Timestamp"
        signature = request.header(header)
        timestamp = _require_timestamp(request.headers, ts_header)
        _check_timestamp(timestamp, ts_header, request.now, config.tolerance_seconds)
        content = (
            request.method.upper().encode()
            + self._decode_uri(request.url).encode()
            + request.body
            + timestamp.encode()
        )
        provided = _decode(signature, "base64", header)
        _verify_any(request.secrets, lambda key: _hmac(key, content), [provided], header)

    @classmethod
    def _decode_uri(cls, url: str) -> str:
        out = url
        for escaped, char in cls._URI_DECODE.items():
            out = out.replace(escaped, char).replace(escaped.lower(), char)
        return out


class StandardWebhooks(SignatureScheme):
    """Standard Webhooks: ``webhook-id``/``webhook-timestamp``/``webhook-signature``.

    The signed content is ``f"{id}.{timestamp}.{body}"``; the signature header holds
    space-separated ``v1,<base64>`` entries (several during key rotation). A secret of the
    form ``whsec_<base64>`` is base64-decoded; any other secret is used as UTF-8 bytes.
    """

    name = "standard-webhooks"
    signs_timestamp = "always"

    def check(self, request: SignedRequest, config: SignatureConfig) -> None:
        header = config.header or "webhook-signature"
        ts_header = config.timestamp_header or "webhook-timestamp"
        msg_id = request.header("webhook-id")
        timestamp = _require_timestamp(request.headers, ts_header)
        signatures = request.header(header)
        _check_timestamp(timestamp, ts_header, request.now, config.tolerance_seconds)
        content = f"{msg_id}.{timestamp}.".encode() + request.body
        entries = (entry.partition(",") for entry in signatures.split())
        candidates = [sig for version, _, sig in entries if version == "v1"]
        if not candidates:
            raise SignatureError(f"header {header!r} has no 'v1,<base64>' signature", field=header)
        provided = _decode_all(candidates, "base64", header)
        _verify_any(
            request.secrets,
            lambda key: _hmac(key, content),
            provided,
            header,
            key_of=_standard_webhooks_key,
        )


#: Every scheme, one instance each (they hold no state).
SCHEMES: list[SignatureScheme] = [
    NoSignature(),
    HmacSha256(),
    GitHub(),
    Stripe(),
    Slack(),
    Shopify(),
    HubSpotV3(),
    Linear(),
    StandardWebhooks(),
]
_BY_NAME = {scheme.name: scheme for scheme in SCHEMES}


def get_scheme(name: str) -> SignatureScheme:
    """Return the signature scheme registered under ``name``.

    Raises:
        KeyError: If no scheme has that name; the message lists the known ones.
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(sorted(_BY_NAME))
        raise KeyError(f"unknown signature scheme {name!r}; known schemes: {known}") from None


def sign_generic(
    secret: str,
    body: bytes,
    *,
    encoding: Literal["hex", "base64"] = "hex",
    prefix: str = "",
    timestamp: str | int | None = None,
) -> str:
    """Produce the header value the ``hmac-sha256`` scheme accepts (for tests and the demo).

    Args:
        secret: The shared secret.
        body: The exact bytes that will be sent.
        encoding: ``hex`` or ``base64``.
        prefix: Text put before the digest, e.g. ``"sha256="``.
        timestamp: When the scheme is configured with ``timestamp_header``, the value sent
            in that header; the signed content becomes ``f"{timestamp}.{body}"``.
    """
    content = body if timestamp is None else f"{timestamp}.".encode() + body
    digest = _hmac(secret.encode(), content)
    encoded = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    return prefix + encoded


def _hmac(key: bytes, content: bytes) -> bytes:
    return hmac.new(key, content, hashlib.sha256).digest()


def _utf8_key(secret: str) -> bytes:
    return secret.encode()


def _standard_webhooks_key(secret: str) -> bytes:
    if not secret.startswith("whsec_"):
        return secret.encode()
    try:
        encoded = secret[len("whsec_") :]
        # Secrets are sometimes handed out without base64 padding; the reference library
        # accepts them, so do we.
        return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        # Name the problem, never the secret.
        raise SignatureError(
            "a configured standard-webhooks secret starts with 'whsec_' but is not valid base64"
        ) from None


def _verify_any(
    secrets: Sequence[str],
    compute: Callable[[bytes], bytes],
    provided: Sequence[bytes],
    header: str,
    *,
    key_of: Callable[[str], bytes] = _utf8_key,
) -> None:
    """Pass when any secret's digest equals any provided signature (both lists may rotate)."""
    if not secrets:
        raise SignatureError(
            f"no webhook secret is configured to check {header!r}; set webhook_secret for "
            "this provider or use signature scheme 'none'",
            field=header,
        )
    matched = False
    for secret in secrets:
        expected = compute(key_of(secret))
        for candidate in provided:
            # Keep looping after a match so timing does not reveal which secret matched.
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise SignatureError(
            f"signature in {header!r} does not match the request body", field=header
        )


def _require_header(headers: Mapping[str, str], name: str) -> str:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    if value is None or not value.strip():
        raise SignatureError(f"missing signature header {name!r}", field=name)
    return value.strip()


def _require_timestamp(headers: Mapping[str, str], name: str) -> str:
    try:
        return _require_header(headers, name)
    except SignatureError:
        raise SignatureError(
            f"missing timestamp header {name!r}: the signature covers the time it was sent, "
            "so a request without it cannot be checked for replay",
            field=name,
            code="invalid_timestamp",
        ) from None


def _strip_prefix(value: str, prefix: str, header: str) -> str:
    if not prefix:
        return value
    if not value.startswith(prefix):
        raise SignatureError(f"header {header!r} does not start with {prefix!r}", field=header)
    return value[len(prefix) :]


def _decode(signature: str, encoding: str, header: str) -> bytes:
    """Decode a provided signature to raw digest bytes, so hex case or padding never matter."""
    try:
        if encoding == "hex":
            return bytes.fromhex(signature)
        return base64.b64decode(signature, validate=True)
    except (ValueError, binascii.Error):
        raise SignatureError(f"header {header!r} is not valid {encoding}", field=header) from None


def _decode_all(candidates: Sequence[str], encoding: str, header: str) -> list[bytes]:
    """Decode every well-formed candidate; one garbled entry must not hide a valid one."""
    decoded: list[bytes] = []
    for candidate in candidates:
        try:
            decoded.append(_decode(candidate, encoding, header))
        except SignatureError:
            continue
    if not decoded:
        raise SignatureError(f"header {header!r} holds no valid {encoding} signature", field=header)
    return decoded


def _check_timestamp(value: str, header: str, now: float, tolerance: int) -> None:
    try:
        stamp = int(value)
    except ValueError:
        raise SignatureError(
            f"timestamp in {header!r} is not an integer: {value[:40]!r}",
            field=header,
            code="invalid_timestamp",
        ) from None
    try:
        seconds = stamp / 1000 if stamp > _MILLISECONDS_THRESHOLD else float(stamp)
    except OverflowError:
        # Hundreds of digits: too large for a float, and far outside any tolerance.
        seconds = math.inf if stamp > 0 else -math.inf
    skew = now - seconds
    # Both directions: an old timestamp is a replay, a future one a forged or skewed clock.
    if not abs(skew) <= tolerance:
        away = f"{int(skew)} s" if math.isfinite(skew) else "far"
        raise SignatureError(
            f"timestamp in {header!r} is {away} away from now, outside the "
            f"{tolerance} s tolerance (replayed request or clock skew)",
            field=header,
            code="stale_timestamp",
        )


def _parse_stripe_header(value: str, header: str) -> tuple[str, list[str]]:
    timestamp: str | None = None
    candidates: list[str] = []
    for part in value.split(","):
        key, _, item = part.strip().partition("=")
        if key == "t":
            timestamp = item
        elif key == "v1":
            candidates.append(item)
    if timestamp is None:
        raise SignatureError(
            f"header {header!r} has no 't=' timestamp", field=header, code="invalid_timestamp"
        )
    if not candidates:
        raise SignatureError(f"header {header!r} has no 'v1=' signature", field=header)
    return timestamp, candidates
