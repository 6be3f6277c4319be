"""Webhook signature schemes, checked against providers' published examples and libraries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook

from config.errors import BadInputError
from config.integrations import SignatureConfig
from config.presets import PRESETS, REPLAY_SAFE_SCHEMES, SIGNATURE_SCHEMES
from ingress.provider_signatures import SCHEMES, SignatureError, get_scheme, sign_generic

NOW = 1_700_000_000.0
SECRET = "s3cr3t-value"


def _hmac(key: bytes, content: bytes) -> bytes:
    return hmac.new(key, content, hashlib.sha256).digest()


def verify(
    scheme: str,
    *,
    body: bytes,
    headers: dict[str, str],
    secrets: list[str] | None = None,
    method: str = "POST",
    url: str = "https://hooks.example.com/webhook/x",
    now: float = NOW,
    **config: object,
) -> None:
    get_scheme(scheme).verify(
        secrets=[SECRET] if secrets is None else secrets,
        body=body,
        headers=headers,
        method=method,
        url=url,
        now=now,
        config=SignatureConfig(scheme=scheme, **config),  # type: ignore[arg-type]
    )


def assert_rejected(
    match: str, scheme: str, *, code: str = "invalid_signature", **kwargs: object
) -> SignatureError:
    with pytest.raises(SignatureError, match=match) as caught:
        verify(scheme, **kwargs)  # type: ignore[arg-type]
    assert caught.value.code == code
    return caught.value


# --- registry -------------------------------------------------------------------------


def test_registry_matches_the_names_the_loader_accepts() -> None:
    assert [scheme.name for scheme in SCHEMES] == list(SIGNATURE_SCHEMES)


def test_every_preset_uses_a_registered_scheme() -> None:
    for preset in PRESETS.values():
        assert get_scheme(preset["webhook"]["signature"]["scheme"]).name


def test_unknown_scheme_is_a_key_error_listing_known_ones() -> None:
    with pytest.raises(KeyError, match="'gihtub'.*github"):
        get_scheme("gihtub")


def test_signature_error_is_bad_input() -> None:
    assert issubclass(SignatureError, BadInputError)


def test_none_accepts_anything() -> None:
    verify("none", body=b"anything", headers={}, secrets=[])


# --- GitHub ---------------------------------------------------------------------------

# GitHub's documented example: secret "It's a Secret to Everybody", payload "Hello, World!".
GITHUB_SECRET = "It's a Secret to Everybody"
GITHUB_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_github_accepts_the_documented_example() -> None:
    verify(
        "github",
        body=b"Hello, World!",
        headers={"X-Hub-Signature-256": GITHUB_SIGNATURE},
        secrets=[GITHUB_SECRET],
    )


def test_headers_are_case_insensitive() -> None:
    verify(
        "github",
        body=b"Hello, World!",
        headers={"x-hub-signature-256": GITHUB_SIGNATURE},
        secrets=[GITHUB_SECRET],
    )


def test_github_rejects_a_tampered_body() -> None:
    assert_rejected(
        "does not match",
        "github",
        body=b"Hello, World?",
        headers={"X-Hub-Signature-256": GITHUB_SIGNATURE},
        secrets=[GITHUB_SECRET],
    )


def test_missing_header_is_named() -> None:
    error = assert_rejected("X-Hub-Signature-256", "github", body=b"x", headers={})
    assert error.field == "X-Hub-Signature-256"


def test_github_needs_the_sha256_prefix() -> None:
    bare = GITHUB_SIGNATURE.removeprefix("sha256=")
    assert_rejected(
        "'sha256='",
        "github",
        body=b"Hello, World!",
        headers={"X-Hub-Signature-256": bare},
        secrets=[GITHUB_SECRET],
    )


def test_any_rotated_secret_verifies() -> None:
    verify(
        "github",
        body=b"Hello, World!",
        headers={"X-Hub-Signature-256": GITHUB_SIGNATURE},
        secrets=["old-secret", GITHUB_SECRET],
    )


def test_no_secret_configured_is_rejected_with_a_fix() -> None:
    assert_rejected(
        "no webhook secret",
        "github",
        body=b"Hello, World!",
        headers={"X-Hub-Signature-256": GITHUB_SIGNATURE},
        secrets=[],
    )


def test_messages_never_contain_the_secret_or_the_expected_digest() -> None:
    body = b'{"action": "opened"}'
    expected = _hmac(SECRET.encode(), body)
    error = assert_rejected(
        "does not match",
        "github",
        body=body,
        headers={"X-Hub-Signature-256": "sha256=" + "0" * 64},
    )
    text = str(error)
    assert SECRET not in text
    assert expected.hex() not in text
    assert base64.b64encode(expected).decode() not in text


def test_non_hex_signature_is_rejected_not_crashed() -> None:
    assert_rejected(
        "not valid hex", "github", body=b"x", headers={"X-Hub-Signature-256": "sha256=zz\u00e9"}
    )


# --- generic HMAC ---------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["hex", "base64"])
@pytest.mark.parametrize("prefix", ["", "sha256="])
def test_generic_accepts_sign_generic(encoding: str, prefix: str) -> None:
    body = b'{"id": 1}'
    signature = sign_generic(SECRET, body, encoding=encoding, prefix=prefix)  # type: ignore[arg-type]
    verify(
        "hmac-sha256",
        body=body,
        headers={"X-Signature": signature},
        header="X-Signature",
        encoding=encoding,
        prefix=prefix,
    )


def test_sign_generic_is_plain_hmac_sha256() -> None:
    assert sign_generic(SECRET, b"abc") == _hmac(SECRET.encode(), b"abc").hex()
    assert sign_generic(SECRET, b"abc", encoding="base64", prefix="v=") == "v=" + (
        base64.b64encode(_hmac(SECRET.encode(), b"abc")).decode()
    )


def test_generic_rejects_a_wrong_secret() -> None:
    signature = sign_generic("other", b"body")
    assert_rejected(
        "does not match", "hmac-sha256", body=b"body", headers={"X-Sig": signature}, header="X-Sig"
    )


def test_generic_without_a_configured_header_explains_the_fix() -> None:
    assert_rejected("needs webhook.signature.header", "hmac-sha256", body=b"x", headers={})


def test_generic_with_timestamp_signs_timestamp_dot_body() -> None:
    body = b"{}"
    stamp = str(int(NOW))
    signature = sign_generic(SECRET, body, timestamp=stamp)
    assert signature == _hmac(SECRET.encode(), f"{stamp}.".encode() + body).hex()
    verify(
        "hmac-sha256",
        body=body,
        headers={"X-Sig": signature, "X-Ts": stamp},
        header="X-Sig",
        timestamp_header="X-Ts",
    )


@pytest.mark.parametrize("offset", [-301, 301])
def test_generic_timestamp_outside_tolerance_is_rejected(offset: int) -> None:
    stamp = str(int(NOW) + offset)
    signature = sign_generic(SECRET, b"{}", timestamp=stamp)
    assert_rejected(
        "outside the 300 s tolerance",
        "hmac-sha256",
        code="stale_timestamp",
        body=b"{}",
        headers={"X-Sig": signature, "X-Ts": stamp},
        header="X-Sig",
        timestamp_header="X-Ts",
    )


# --- Stripe ---------------------------------------------------------------------------


def _stripe_header(secret: str, body: bytes, t: int, extra: str = "") -> str:
    v1 = _hmac(secret.encode(), f"{t}.".encode() + body).hex()
    return f"t={t},v1={v1}{extra}"


def test_stripe_accepts_t_and_v1() -> None:
    body = b'{"id": "evt_1", "type": "customer.created"}'
    header = _stripe_header("whsec_test", body, int(NOW))
    verify("stripe", body=body, headers={"Stripe-Signature": header}, secrets=["whsec_test"])


def test_stripe_accepts_any_of_several_v1_and_ignores_v0() -> None:
    body = b"{}"
    good = _stripe_header("whsec_test", body, int(NOW)).split(",")[1]
    header = f"t={int(NOW)},v1={'ab' * 32},v1=zz,{good},v0={'cd' * 32}"
    verify("stripe", body=body, headers={"Stripe-Signature": header}, secrets=["whsec_test"])


def test_stripe_rejects_a_stale_timestamp() -> None:
    body = b"{}"
    header = _stripe_header("whsec_test", body, int(NOW) - 600)
    assert_rejected(
        "tolerance",
        "stripe",
        code="stale_timestamp",
        body=body,
        headers={"Stripe-Signature": header},
        secrets=["whsec_test"],
    )


def test_stripe_needs_t_and_v1() -> None:
    assert_rejected(
        "no 't='",
        "stripe",
        code="invalid_timestamp",
        body=b"{}",
        headers={"Stripe-Signature": "v1=ab"},
    )
    assert_rejected("no 'v1='", "stripe", body=b"{}", headers={"Stripe-Signature": "t=1"})


# --- Slack ----------------------------------------------------------------------------

# Slack's documented example request.
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
SLACK_TS = "1531420618"
SLACK_BODY = (
    b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id="
    b"G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook"
    b"-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F3977"
    b"00885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10"
    b"d2c447fce8b6703c"
)
SLACK_SIGNATURE = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
SLACK_HEADERS = {"X-Slack-Signature": SLACK_SIGNATURE, "X-Slack-Request-Timestamp": SLACK_TS}


def test_slack_accepts_the_documented_example() -> None:
    verify(
        "slack",
        body=SLACK_BODY,
        headers=SLACK_HEADERS,
        secrets=[SLACK_SECRET],
        now=float(SLACK_TS) + 10,
    )


def test_slack_rejects_a_replay_after_the_tolerance() -> None:
    assert_rejected(
        "X-Slack-Request-Timestamp.*tolerance",
        "slack",
        code="stale_timestamp",
        body=SLACK_BODY,
        headers=SLACK_HEADERS,
        secrets=[SLACK_SECRET],
        now=float(SLACK_TS) + 301,
    )


def test_slack_needs_its_timestamp_header() -> None:
    assert_rejected(
        "missing timestamp header 'X-Slack-Request-Timestamp'",
        "slack",
        code="invalid_timestamp",
        body=SLACK_BODY,
        headers={"X-Slack-Signature": SLACK_SIGNATURE},
        secrets=[SLACK_SECRET],
        now=float(SLACK_TS),
    )


# --- Shopify, Linear ------------------------------------------------------------------


def test_shopify_is_base64_of_the_body_hmac() -> None:
    body = b'{"id": 820982911946154508}'
    signature = base64.b64encode(_hmac(SECRET.encode(), body)).decode()
    verify("shopify", body=body, headers={"X-Shopify-Hmac-Sha256": signature})
    assert_rejected(
        "does not match", "shopify", body=body + b" ", headers={"X-Shopify-Hmac-Sha256": signature}
    )


def test_shopify_rejects_a_hex_signature() -> None:
    body = b"{}"
    hex_signature = _hmac(SECRET.encode(), body).hex()
    with pytest.raises(SignatureError):
        verify("shopify", body=body, headers={"X-Shopify-Hmac-Sha256": hex_signature})


def test_linear_is_hex_of_the_body_hmac() -> None:
    body = b'{"action": "create", "type": "Issue", "webhookTimestamp": 1700000000000}'
    signature = _hmac(SECRET.encode(), body).hex()
    verify("linear", body=body, headers={"Linear-Signature": signature})
    verify("linear", body=body, headers={"linear-signature": signature.upper()})
    assert_rejected("does not match", "linear", body=body, headers={"Linear-Signature": "00" * 32})


# --- HubSpot v3 -----------------------------------------------------------------------


def _hubspot_signature(method: str, uri: str, body: bytes, timestamp: str) -> str:
    content = method.encode() + uri.encode() + body + timestamp.encode()
    return base64.b64encode(_hmac(SECRET.encode(), content)).decode()


def test_hubspot_v3_signs_method_uri_body_timestamp_ms() -> None:
    body = b'[{"eventId": 1, "subscriptionType": "contact.creation", "portalId": 62515}]'
    uri = "https://hooks.example.com/webhook/hubspot?x=1"
    stamp = str(int(NOW * 1000))
    headers = {
        "X-HubSpot-Signature-v3": _hubspot_signature("POST", uri, body, stamp),
        "X-HubSpot-Request-Timestamp": stamp,
    }
    verify("hubspot-v3", body=body, headers=headers, url=uri, method="post")
    assert_rejected(
        "does not match", "hubspot-v3", body=body, headers=headers, url=uri, method="PUT"
    )


def test_hubspot_v3_decodes_the_listed_url_escapes_before_signing() -> None:
    body = b"[]"
    stamp = str(int(NOW * 1000))
    signed_uri = "https://hooks.example.com/webhook/hubspot?email=a@b.c"
    headers = {
        "X-HubSpot-Signature-v3": _hubspot_signature("POST", signed_uri, body, stamp),
        "X-HubSpot-Request-Timestamp": stamp,
    }
    received = "https://hooks.example.com/webhook/hubspot?email=a%40b.c"
    verify("hubspot-v3", body=body, headers=headers, url=received)


def test_hubspot_v3_rejects_a_timestamp_older_than_five_minutes() -> None:
    body = b"[]"
    stamp = str(int((NOW - 301) * 1000))
    uri = "https://hooks.example.com/webhook/hubspot"
    headers = {
        "X-HubSpot-Signature-v3": _hubspot_signature("POST", uri, body, stamp),
        "X-HubSpot-Request-Timestamp": stamp,
    }
    assert_rejected(
        "tolerance", "hubspot-v3", code="stale_timestamp", body=body, headers=headers, url=uri
    )


# --- Standard Webhooks (against the reference library) --------------------------------

STANDARD_SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def _standard_headers(secret: str, msg_id: str, when: datetime, body: bytes) -> dict[str, str]:
    signature = Webhook(secret).sign(msg_id=msg_id, timestamp=when, data=body.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signature,
    }


def test_standard_webhooks_accepts_the_reference_library_signature() -> None:
    body = b'{"type": "contact.created", "data": {"id": 1}}'
    when = datetime.fromtimestamp(NOW, tz=UTC)
    headers = _standard_headers(STANDARD_SECRET, "msg_2b", when, body)
    verify("standard-webhooks", body=body, headers=headers, secrets=[STANDARD_SECRET])


def test_standard_webhooks_accepts_unpadded_secrets_like_the_library() -> None:
    unpadded = "whsec_" + base64.b64encode(b"0123456789abcdef0").decode().rstrip("=")
    body = b"{}"
    headers = _standard_headers(unpadded, "msg_1", datetime.fromtimestamp(NOW, tz=UTC), body)
    verify("standard-webhooks", body=body, headers=headers, secrets=[unpadded])


def test_standard_webhooks_accepts_one_of_several_signatures() -> None:
    body = b"{}"
    headers = _standard_headers(STANDARD_SECRET, "msg_1", datetime.fromtimestamp(NOW, tz=UTC), body)
    headers["webhook-signature"] = "v1,AAAA v1,not*base64 v2,x " + headers["webhook-signature"]
    verify("standard-webhooks", body=body, headers=headers, secrets=[STANDARD_SECRET])


def test_standard_webhooks_signature_covers_the_message_id() -> None:
    body = b"{}"
    headers = _standard_headers(STANDARD_SECRET, "msg_1", datetime.fromtimestamp(NOW, tz=UTC), body)
    headers["webhook-id"] = "msg_2"
    assert_rejected(
        "does not match",
        "standard-webhooks",
        body=body,
        headers=headers,
        secrets=[STANDARD_SECRET],
    )


def test_standard_webhooks_rejects_an_old_message() -> None:
    body = b"{}"
    when = datetime.fromtimestamp(NOW - 3600, tz=UTC)
    headers = _standard_headers(STANDARD_SECRET, "msg_1", when, body)
    assert_rejected(
        "tolerance",
        "standard-webhooks",
        code="stale_timestamp",
        body=body,
        headers=headers,
        secrets=[STANDARD_SECRET],
    )


def test_standard_webhooks_plain_secret_is_used_as_utf8_bytes() -> None:
    body = b"{}"
    stamp = str(int(NOW))
    digest = _hmac(b"plain-secret", f"msg_1.{stamp}.".encode() + body)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }
    verify("standard-webhooks", body=body, headers=headers, secrets=["plain-secret"])


def test_standard_webhooks_without_v1_entry_is_rejected() -> None:
    headers = {"webhook-id": "m", "webhook-timestamp": str(int(NOW)), "webhook-signature": "v2,x"}
    assert_rejected("no 'v1,<base64>'", "standard-webhooks", body=b"{}", headers=headers)


@pytest.mark.parametrize("stamp", ["9" * 400, "-" + "9" * 400])
def test_a_timestamp_too_large_for_a_float_is_rejected_not_crashed(stamp: str) -> None:
    # int() accepts it, but dividing or subtracting it as a float overflowed: a 500.
    error = assert_rejected(
        "outside the 300 s tolerance",
        "hmac-sha256",
        code="stale_timestamp",
        body=b"{}",
        headers={"X-Sig": sign_generic(SECRET, b"{}", timestamp=stamp), "X-Ts": stamp},
        header="X-Sig",
        timestamp_header="X-Ts",
    )
    assert error.field == "X-Ts"


def test_a_non_integer_timestamp_is_named_but_not_echoed_whole() -> None:
    stamp = "x" * 5000
    error = assert_rejected(
        "is not an integer",
        "slack",
        code="invalid_timestamp",
        body=b"{}",
        headers={"X-Slack-Signature": "v0=" + "ab" * 32, "X-Slack-Request-Timestamp": stamp},
    )
    assert len(str(error)) < 200


# --- the same six checks for every scheme ---------------------------------------------
#
# Each signer builds what its provider sends at time ``when`` with ``secret``: the body,
# the headers, and the scheme options (``config``). Every test below that accepts a
# request also refuses a near miss, so none passes with a comparison that always matches
# (``test_the_matrix_depends_on_the_comparison`` checks that it would then fail).

NEW_SECRET, OLD_SECRET = "new-secret", "old-secret"
URL = "https://hooks.example.com/webhook/x"


@dataclass(frozen=True)
class Signed:
    body: bytes
    headers: dict[str, str]
    config: dict[str, object]
    #: The header carrying the signature, and the one carrying the time (if any).
    signature_header: str
    timestamp_header: str | None = None


def _generic(secret: str, when: float) -> Signed:
    body = b'{"id": 1}'
    return Signed(body, {"X-Sig": sign_generic(secret, body)}, {"header": "X-Sig"}, "X-Sig")


def _generic_stamped(secret: str, when: float) -> Signed:
    body, stamp = b'{"id": 1}', str(int(when))
    headers = {"X-Sig": sign_generic(secret, body, timestamp=stamp), "X-Timestamp": stamp}
    config: dict[str, object] = {"header": "X-Sig", "timestamp_header": "X-Timestamp"}
    return Signed(body, headers, config, "X-Sig", "X-Timestamp")


def _github(secret: str, when: float) -> Signed:
    body = b'{"action": "opened"}'
    signature = "sha256=" + _hmac(secret.encode(), body).hex()
    return Signed(body, {"X-Hub-Signature-256": signature}, {}, "X-Hub-Signature-256")


def _shopify(secret: str, when: float) -> Signed:
    body = b'{"id": 820982911946154508}'
    signature = base64.b64encode(_hmac(secret.encode(), body)).decode()
    return Signed(body, {"X-Shopify-Hmac-Sha256": signature}, {}, "X-Shopify-Hmac-Sha256")


def _linear(secret: str, when: float) -> Signed:
    body = json.dumps({"type": "Issue", "webhookTimestamp": int(when * 1000)}).encode()
    signature = _hmac(secret.encode(), body).hex()
    return Signed(body, {"Linear-Signature": signature}, {}, "Linear-Signature")


def _stripe(secret: str, when: float) -> Signed:
    body = b'{"id": "evt_1"}'
    header = _stripe_header(secret, body, int(when))
    return Signed(body, {"Stripe-Signature": header}, {}, "Stripe-Signature")


def _slack(secret: str, when: float) -> Signed:
    body, stamp = b"token=x&team_id=T1", str(int(when))
    signature = "v0=" + _hmac(secret.encode(), f"v0:{stamp}:".encode() + body).hex()
    headers = {"X-Slack-Signature": signature, "X-Slack-Request-Timestamp": stamp}
    return Signed(body, headers, {}, "X-Slack-Signature", "X-Slack-Request-Timestamp")


def _hubspot(secret: str, when: float) -> Signed:
    body, stamp = b'[{"eventId": 1}]', str(int(when * 1000))
    content = b"POST" + URL.encode() + body + stamp.encode()
    signature = base64.b64encode(_hmac(secret.encode(), content)).decode()
    headers = {"X-HubSpot-Signature-v3": signature, "X-HubSpot-Request-Timestamp": stamp}
    return Signed(body, headers, {}, "X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp")


def _standard(secret: str, when: float) -> Signed:
    body, stamp = b'{"type": "x"}', str(int(when))
    digest = _hmac(secret.encode(), f"msg_1.{stamp}.".encode() + body)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": stamp,
        "webhook-signature": "v1," + base64.b64encode(digest).decode(),
    }
    return Signed(body, headers, {}, "webhook-signature", "webhook-timestamp")


#: (scheme, signer); ``hmac-sha256`` twice: without and with ``timestamp_header``.
SIGNERS: dict[str, tuple[str, Callable[[str, float], Signed]]] = {
    "hmac-sha256": ("hmac-sha256", _generic),
    "hmac-sha256+timestamp": ("hmac-sha256", _generic_stamped),
    "github": ("github", _github),
    "shopify": ("shopify", _shopify),
    "linear": ("linear", _linear),
    "stripe": ("stripe", _stripe),
    "slack": ("slack", _slack),
    "hubspot-v3": ("hubspot-v3", _hubspot),
    "standard-webhooks": ("standard-webhooks", _standard),
}
#: The variants whose captured requests stay valid forever (replayable).
REPLAYABLE = {"hmac-sha256", "github", "shopify"}


def check(variant: str, signed: Signed, secrets: list[str], now: float = NOW) -> None:
    scheme, _ = SIGNERS[variant]
    verify(
        scheme,
        body=signed.body,
        headers=signed.headers,
        secrets=secrets,
        url=URL,
        now=now,
        **signed.config,  # type: ignore[arg-type]
    )


def refused(variant: str, signed: Signed, secrets: list[str], now: float = NOW) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        check(variant, signed, secrets, now)
    return caught.value


def test_the_matrix_covers_every_scheme_but_none() -> None:
    covered = {scheme for scheme, _ in SIGNERS.values()}
    assert covered == set(SIGNATURE_SCHEMES) - {"none"}


def test_replay_safety_is_declared_where_the_loader_reads_it() -> None:
    always = [s.name for s in SCHEMES if s.signs_timestamp == "always"]
    assert always == list(REPLAY_SAFE_SCHEMES)
    assert {s.name for s in SCHEMES if s.signs_timestamp == "never"} == (
        {"none"} | REPLAYABLE - {"hmac-sha256"}
    )


@pytest.mark.parametrize("variant", SIGNERS)
def test_valid(variant: str) -> None:
    signed = SIGNERS[variant][1](NEW_SECRET, NOW)
    check(variant, signed, [NEW_SECRET])
    # The same request against another configured secret must not pass.
    assert refused(variant, signed, [OLD_SECRET]).code == "invalid_signature"


@pytest.mark.parametrize("variant", SIGNERS)
def test_tampered_body(variant: str) -> None:
    signed = SIGNERS[variant][1](NEW_SECRET, NOW)
    tampered = replace(signed, body=signed.body + b" ")
    error = refused(variant, tampered, [NEW_SECRET])
    assert error.code == "invalid_signature"
    assert "does not match" in str(error) and error.field == signed.signature_header


@pytest.mark.parametrize("variant", SIGNERS)
def test_wrong_secret(variant: str) -> None:
    signed = SIGNERS[variant][1]("an-attacker-guess", NOW)
    error = refused(variant, signed, [NEW_SECRET])
    assert error.code == "invalid_signature" and "does not match" in str(error)


@pytest.mark.parametrize("variant", SIGNERS)
def test_rotated_secret(variant: str) -> None:
    sign = SIGNERS[variant][1]
    # During rotation both secrets are configured and requests signed with either pass...
    check(variant, sign(OLD_SECRET, NOW), [OLD_SECRET, NEW_SECRET])
    check(variant, sign(NEW_SECRET, NOW), [OLD_SECRET, NEW_SECRET])
    # ...and once the old one is removed, only the new one does.
    assert refused(variant, sign(OLD_SECRET, NOW), [NEW_SECRET]).code == "invalid_signature"


@pytest.mark.parametrize("variant", SIGNERS)
def test_stale_timestamp(variant: str) -> None:
    sign = SIGNERS[variant][1]
    if variant in REPLAYABLE:
        # Evidence, not a wish: a body-only signature captured a year ago still verifies.
        check(variant, sign(NEW_SECRET, NOW - 365 * 86_400), [NEW_SECRET])
        assert refused(variant, sign(OLD_SECRET, NOW), [NEW_SECRET]).code == "invalid_signature"
        return
    check(variant, sign(NEW_SECRET, NOW - 299), [NEW_SECRET])
    for offset in (-301, 301):  # a replay, and a time too far ahead
        error = refused(variant, sign(NEW_SECRET, NOW + offset), [NEW_SECRET])
        assert error.code == "stale_timestamp"
        assert "outside the 300 s tolerance" in str(error)


@pytest.mark.parametrize("variant", SIGNERS)
def test_missing_header(variant: str) -> None:
    signed = SIGNERS[variant][1](NEW_SECRET, NOW)
    check(variant, signed, [NEW_SECRET])
    missing = {k: v for k, v in signed.headers.items() if k != signed.signature_header}
    error = refused(variant, replace(signed, headers=missing), [NEW_SECRET])
    assert error.code == "invalid_signature" and error.field == signed.signature_header
    assert f"missing signature header {signed.signature_header!r}" in str(error)
    if signed.timestamp_header is not None:
        headers = {k: v for k, v in signed.headers.items() if k != signed.timestamp_header}
        error = refused(variant, replace(signed, headers=headers), [NEW_SECRET])
        assert error.code == "invalid_timestamp" and error.field == signed.timestamp_header
        assert f"missing timestamp header {signed.timestamp_header!r}" in str(error)


def test_linear_needs_its_webhook_timestamp_in_the_signed_body() -> None:
    body = b'{"type": "Issue"}'
    headers = {"Linear-Signature": _hmac(NEW_SECRET.encode(), body).hex()}
    error = assert_rejected(
        "no integer 'webhookTimestamp'",
        "linear",
        code="invalid_timestamp",
        body=body,
        headers=headers,
        secrets=[NEW_SECRET],
    )
    assert error.field == "webhookTimestamp"


@pytest.mark.parametrize("variant", SIGNERS)
def test_the_matrix_depends_on_the_comparison(
    variant: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The mutation the issue describes: with a comparison that always matches, the tampered
    # and wrong-secret requests above would pass, so those tests would fail.
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: True)
    sign = SIGNERS[variant][1]
    signed = sign("an-attacker-guess", NOW)
    check(variant, replace(signed, body=signed.body + b" "), [NEW_SECRET])


def test_linear_preset_refuses_a_webhook_timestamp_over_a_minute_old() -> None:
    # Linear's guidance: reject a webhookTimestamp more than a minute from now. The preset
    # says so; the matrix above runs with the generic 300 s default.
    config = PRESETS["linear"]["webhook"]["signature"]
    assert config["tolerance_seconds"] == 60
    options = {k: v for k, v in config.items() if k not in ("scheme", "header", "encoding")}
    check("linear", replace(_linear(NEW_SECRET, NOW - 59), config=options), [NEW_SECRET])
    for offset in (-61, 61):
        signed = replace(_linear(NEW_SECRET, NOW + offset), config=options)
        error = refused("linear", signed, [NEW_SECRET])
        assert error.code == "stale_timestamp" and error.field == "webhookTimestamp"
        assert "outside the 60 s tolerance" in str(error)
