"""Token refresh decisions and formats (workers/tokens.py) and the credential fields they
rely on (cache/credentials.py): no I/O."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding

from cache.credentials import validate_credentials
from config.errors import BadInputError
from tests.support.keys import APP_KEY, APP_PEM
from workers.tokens import (
    REFRESH_FAILED,
    RefreshRejected,
    RefreshUnavailable,
    github_app_jwt,
    github_app_jwt_claims,
    installation_token_request,
    is_refresh_due,
    oauth2_refresh_request,
    parse_installation_response,
    parse_oauth2_response,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
SECRET = "client-secret-do-not-leak"
REFRESH = "refresh-token-do-not-leak"
KEY, PEM = APP_KEY, APP_PEM


def oauth2(**fields: str) -> dict[str, str]:
    return {
        "type": "OAUTH2",
        "access_token": "old-access",
        "refresh_token": REFRESH,
        "token_url": "https://auth.example/token",
        "client_id": "cid",
        "client_secret": SECRET,
        **fields,
    }


def app(**fields: str) -> dict[str, str]:
    return {
        "type": "APP",
        "app_id": "401953",
        "installation_id": "77",
        "private_key": PEM,
        **fields,
    }


def at(delta_seconds: float) -> str:
    return (NOW + timedelta(seconds=delta_seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- is it due? -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credentials", "due"),
    [
        (oauth2(expires_at=at(3600)), False),
        (oauth2(expires_at=at(299)), True),  # within the 300 s margin
        (oauth2(expires_at=at(301)), False),
        (oauth2(expires_at=at(-10)), True),  # expired
        (oauth2(), False),  # no expiry known: used until a 401
        ({"type": "OAUTH2", "access_token": "a", "expires_at": at(-10)}, False),  # cannot
        ({"type": "API_KEY", "api_key": "k"}, False),
        (app(), True),  # never minted
        (app(access_token="ghs_x", expires_at=at(3000)), False),
        (app(access_token="ghs_x", expires_at=at(100)), True),
    ],
)
def test_refresh_is_due_within_the_margin(credentials: dict, due: bool) -> None:
    assert is_refresh_due(credentials, NOW, 300) is due


# -- OAuth2 -----------------------------------------------------------------------------------


def test_the_refresh_request_is_rfc6749_section_6() -> None:
    request = oauth2_refresh_request(oauth2())
    assert request.url == "https://auth.example/token"
    assert request.data == {
        "grant_type": "refresh_token",
        "refresh_token": REFRESH,
        "client_id": "cid",
        "client_secret": SECRET,
    }
    assert SECRET not in repr(request) and REFRESH not in repr(request)


def test_a_token_response_gives_the_new_token_and_its_expiry() -> None:
    body = json.dumps({"access_token": "new", "expires_in": 3600, "token_type": "Bearer"})
    renewed = parse_oauth2_response(oauth2(expires_at=at(0)), 200, body, NOW)
    assert renewed["access_token"] == "new"
    assert renewed["expires_at"] == at(3600)
    assert renewed["refresh_token"] == REFRESH  # not rotated: the old one stays


def test_a_rotated_refresh_token_replaces_the_old_one() -> None:
    body = json.dumps({"access_token": "new", "refresh_token": "rotated", "expires_in": 60})
    assert parse_oauth2_response(oauth2(), 200, body, NOW)["refresh_token"] == "rotated"


def test_no_expires_in_drops_the_old_expiry() -> None:
    renewed = parse_oauth2_response(oauth2(expires_at=at(0)), 200, '{"access_token":"n"}', NOW)
    assert "expires_at" not in renewed


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, '{"error":"invalid_grant","error_description":"Token has been revoked."}'),
        (401, '{"error":"invalid_client"}'),
        (400, "not json"),
        (200, '{"error":"invalid_grant"}'),  # some providers answer errors with 200
    ],
)
def test_a_refusal_is_for_good(status: int, body: str) -> None:
    with pytest.raises(RefreshRejected) as caught:
        parse_oauth2_response(oauth2(), status, body, NOW)
    assert caught.value.error_type == REFRESH_FAILED
    assert SECRET not in str(caught.value) and REFRESH not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "body"),
    [(500, ""), (503, '{"error":"temporarily_unavailable"}'), (429, ""), (200, "<html>")],
)
def test_an_outage_is_transient(status: int, body: str) -> None:
    with pytest.raises(RefreshUnavailable):
        parse_oauth2_response(oauth2(), status, body, NOW)


# -- GitHub App -------------------------------------------------------------------------------


def _verify(jwt: str) -> dict:
    header, payload, signature = jwt.split(".")
    pad = lambda part: base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))  # noqa: E731
    KEY.public_key().verify(
        pad(signature), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    assert json.loads(pad(header)) == {"alg": "RS256", "typ": "JWT"}
    return json.loads(pad(payload))


def test_the_app_jwt_claims_allow_for_clock_drift() -> None:
    claims = github_app_jwt_claims("401953", NOW)
    assert claims == {
        "iat": int(NOW.timestamp()) - 60,
        "exp": int(NOW.timestamp()) - 60 + 540,  # under GitHub's 10 minutes
        "iss": "401953",
    }


def test_the_app_jwt_is_rs256_signed_with_the_private_key() -> None:
    claims = github_app_jwt_claims("401953", NOW)
    jwt = github_app_jwt(PEM, claims)
    assert _verify(jwt) == claims
    tampered = jwt.rsplit(".", 1)[0] + "." + base64.urlsafe_b64encode(b"x" * 256).decode()
    with pytest.raises(InvalidSignature):
        _verify(tampered)


def test_the_installation_token_request_authenticates_as_the_app() -> None:
    request = installation_token_request(app(), NOW, "https://ghe.example/api/v3/")
    assert request.url == "https://ghe.example/api/v3/app/installations/77/access_tokens"
    scheme, jwt = request.headers["Authorization"].split(" ")
    assert scheme == "Bearer" and _verify(jwt)["iss"] == "401953"


def test_an_installation_token_is_kept_with_its_expiry() -> None:
    body = json.dumps({"token": "ghs_new", "expires_at": "2026-12-01T13:00:00Z"})
    renewed = parse_installation_response(app(), 201, body, NOW)
    assert (renewed["access_token"], renewed["expires_at"]) == ("ghs_new", "2026-12-01T13:00:00Z")
    assert renewed["private_key"] == PEM


@pytest.mark.parametrize(("status", "error"), [(401, RefreshRejected), (404, RefreshRejected),
                                               (502, RefreshUnavailable)])  # fmt: skip
def test_installation_token_failures(status: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_installation_response(app(), status, '{"message":"x"}', NOW)


# -- the credential fields --------------------------------------------------------------------


def test_oauth2_credentials_keep_the_refresh_fields_and_normalise_expires_at() -> None:
    given = oauth2(expires_at="2026-12-01T13:00:00+01:00")
    assert validate_credentials(given) == {**given, "expires_at": "2026-12-01T12:00:00Z"}


def test_app_credentials_take_numeric_ids() -> None:
    given = {"type": "APP", "app_id": 401953, "installation_id": 77, "private_key": PEM}
    assert validate_credentials(given) == app()


@pytest.mark.parametrize(
    ("given", "field", "quoted"),
    [
        (oauth2(expires_at="tomorrow"), "credentials.expires_at", "'tomorrow'"),
        (oauth2(token_url="ftp://auth.example"), "credentials.token_url", "'ftp://auth.example'"),
        (app(app_id="my-app"), "credentials.app_id", "'my-app'"),
        (app(private_key="-----BEGIN RSA PRIVATE KEY-----\nnope"), "credentials.private_key", ""),
        (app(private_key="x"), "credentials.private_key", ""),
    ],
)
def test_bad_token_fields_name_the_field(given: dict, field: str, quoted: str) -> None:
    with pytest.raises(BadInputError) as caught:
        validate_credentials(given)
    assert caught.value.field == field
    assert quoted in str(caught.value)
    assert SECRET not in str(caught.value) and "nope" not in str(caught.value)


def test_an_ec_key_is_not_a_github_app_key() -> None:
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(BadInputError, match="credentials.private_key"):
        validate_credentials(app(private_key=ec_pem))
