"""Token refresh decisions and formats, pure: no I/O, no clock, no database.

``workers.token_refresh`` does the I/O around these: it asks ``is_refresh_due``, sends the
``TokenRequest`` built here, and hands the answer to ``parse_oauth2_response`` or
``parse_installation_response``, which return the connection's new credentials or raise:

- ``RefreshRejected`` when the provider refused for good (``invalid_grant``, a 400 or 401
  from the token endpoint): retrying cannot help, an operator must give new credentials;
- ``RefreshUnavailable`` when it may work later (5xx, 429, a garbled answer): the run is
  retried by the normal retry path.

Two kinds of credentials can be refreshed: ``OAUTH2`` with a ``refresh_token`` (RFC 6749
§6), and ``APP``, a GitHub App installation, whose token is minted from an RS256 JWT
signed with the app's private key.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from cache.credentials import format_expires_at, parse_expires_at
from config.errors import FatalError, RetriableError

__all__ = [
    "GITHUB_API",
    "REFRESH_FAILED",
    "RefreshRejected",
    "RefreshUnavailable",
    "TokenRequest",
    "can_refresh",
    "github_app_jwt",
    "github_app_jwt_claims",
    "installation_token_request",
    "is_refresh_due",
    "oauth2_refresh_request",
    "parse_installation_response",
    "parse_oauth2_response",
    "parse_refresh_response",
    "refresh_request",
]

#: The ``error_type`` of a run (and of its failure notification) whose token refresh was
#: refused for good, and the connection state it leaves.
REFRESH_FAILED = "refresh_failed"

#: Where installation tokens are minted when the provider has no ``base_url``.
GITHUB_API = "https://api.github.com"

#: GitHub rejects a JWT issued "in the future" by its clock: ``iat`` is set this far back.
JWT_CLOCK_DRIFT_SECONDS = 60
#: A GitHub App JWT may live at most 10 minutes; 9 leaves room for clock drift.
JWT_LIFETIME_SECONDS = 540

#: OAuth2 ``error`` codes (RFC 6749 §5.2) that say the grant or the client is no good.
_PERMANENT_ERRORS = frozenset(
    {"invalid_grant", "invalid_client", "unauthorized_client", "unsupported_grant_type"}
)
#: An ``expires_in`` beyond this (ten years) is taken as "does not expire".
_MAX_EXPIRES_IN = 10 * 365 * 24 * 3600.0
#: Statuses of a token endpoint worth trying again later, besides 5xx.
_TRANSIENT_STATUSES = frozenset({408, 425, 429})


class RefreshRejected(FatalError):
    """The token endpoint refused the refresh for good; new credentials are needed."""

    error_type = REFRESH_FAILED


class RefreshUnavailable(RetriableError):
    """The token endpoint could not answer now (5xx, 429, network); try again later."""


@dataclass(frozen=True)
class TokenRequest:
    """One POST to a token endpoint; ``data`` is sent form-encoded."""

    url: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    data: dict[str, str] = field(default_factory=dict, repr=False)


def with_client(credentials: Mapping[str, Any], client: Mapping[str, str]) -> dict[str, Any]:
    """OAuth2 ``credentials`` with the integration's OAuth client (``token_url``,
    ``client_id``, ``client_secret``) filling what they do not carry themselves."""
    if credentials.get("type") != "OAUTH2" or not client:
        return dict(credentials)
    own = {name: value for name, value in credentials.items() if value}
    return {**client, **own}


def can_refresh(credentials: Mapping[str, Any]) -> bool:
    """True for credentials hooksync knows how to renew."""
    kind = credentials.get("type")
    if kind == "OAUTH2":
        return bool(credentials.get("refresh_token") and credentials.get("token_url"))
    return kind == "APP"


def is_refresh_due(credentials: Mapping[str, Any], now: datetime, margin_seconds: float) -> bool:
    """Whether the token must be renewed before its next use.

    An OAuth2 token without ``expires_at`` is used until the API answers 401; an
    installation token that was never minted is due at once.
    """
    if not can_refresh(credentials):
        return False
    if credentials.get("type") == "APP" and not credentials.get("access_token"):
        return True
    raw = credentials.get("expires_at")
    if not raw:
        return credentials.get("type") == "APP"
    try:
        expires = parse_expires_at(str(raw))
        return expires - timedelta(seconds=margin_seconds) <= now
    except (ValueError, OverflowError):
        return True  # unreadable: renewing is the safe way to learn the real expiry


def refresh_request(
    credentials: Mapping[str, Any], now: datetime, api_base: str | None
) -> TokenRequest:
    """The request that renews ``credentials`` (either kind)."""
    if credentials.get("type") == "APP":
        return installation_token_request(credentials, now, api_base)
    return oauth2_refresh_request(credentials)


def parse_refresh_response(
    credentials: Mapping[str, Any], status: int, body: str, now: datetime
) -> dict[str, Any]:
    """The renewed credentials from the token endpoint's answer (either kind)."""
    if credentials.get("type") == "APP":
        return parse_installation_response(credentials, status, body, now)
    return parse_oauth2_response(credentials, status, body, now)


# -- OAuth2 -----------------------------------------------------------------------------------


def oauth2_refresh_request(credentials: Mapping[str, Any]) -> TokenRequest:
    """RFC 6749 §6: ``grant_type=refresh_token``, the client's id and secret in the body
    (§2.3.1 allows it and more providers accept it than HTTP Basic)."""
    if not can_refresh(credentials):
        raise RefreshRejected(
            "the connection's OAUTH2 credentials have no refresh_token or token_url; "
            "import the connection again with both so its token can be refreshed"
        )
    data = {"grant_type": "refresh_token", "refresh_token": str(credentials["refresh_token"])}
    for name in ("client_id", "client_secret"):
        if credentials.get(name):
            data[name] = str(credentials[name])
    return TokenRequest(
        url=str(credentials["token_url"]),
        headers={"Accept": "application/json"},
        data=data,
    )


def parse_oauth2_response(
    credentials: Mapping[str, Any], status: int, body: str, now: datetime
) -> dict[str, Any]:
    """The credentials after a refresh: the new access token, its expiry, and the new
    refresh token when the provider rotates them (else the old one, still valid).

    Raises:
        RefreshRejected: 400/401 or another 4xx, or an ``error`` of ``invalid_grant`` & co.
        RefreshUnavailable: 5xx, 408, 429, or a 2xx that is not a token.
    """
    payload = _json_object(body) or {}
    error = payload.get("error")
    if status >= 500 or status in _TRANSIENT_STATUSES:
        raise RefreshUnavailable(f"the token endpoint answered {status}; retrying later")
    if status >= 400 or error in _PERMANENT_ERRORS:
        # The error code is the provider's fixed vocabulary, not a secret; capped anyway.
        code = str(error)[:60] if error else "no error code"
        raise RefreshRejected(
            f"the token endpoint refused the refresh ({code}, HTTP {status}); the "
            "connection needs new credentials: PATCH them to /connections/<connection_id>"
        )
    token = payload.get("access_token")
    if not isinstance(token, str) or not token:
        raise RefreshUnavailable(
            f"the token endpoint answered {status} without an access_token; retrying later"
        )
    renewed = dict(credentials)
    renewed["access_token"] = token
    rotated = payload.get("refresh_token")
    if isinstance(rotated, str) and rotated:
        renewed["refresh_token"] = rotated
    expires_in = payload.get("expires_in")
    try:
        seconds = float(expires_in) if expires_in is not None else None
    except (TypeError, ValueError):
        seconds = None
    if seconds is not None and 0 < seconds < _MAX_EXPIRES_IN:
        renewed["expires_at"] = format_expires_at(now + timedelta(seconds=seconds))
    else:
        # No expiry given: the token lasts until the API says 401.
        renewed.pop("expires_at", None)
    return renewed


# -- GitHub App -------------------------------------------------------------------------------


def github_app_jwt_claims(app_id: str, now: datetime) -> dict[str, Any]:
    """The claims GitHub wants in an app's JWT: issued a minute back, valid 9 minutes."""
    issued = int(now.timestamp()) - JWT_CLOCK_DRIFT_SECONDS
    return {"iat": issued, "exp": issued + JWT_LIFETIME_SECONDS, "iss": str(app_id)}


def github_app_jwt(private_key_pem: str, claims: Mapping[str, Any]) -> str:
    """An RS256 JWT (RFC 7519) of ``claims`` signed with the app's PEM private key."""
    try:
        key = load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, RSAPrivateKey):
        raise RefreshRejected(
            "the connection's APP credentials hold no usable PEM RSA private_key; import "
            "the connection again with the app's .pem file"
        )
    header = {"alg": "RS256", "typ": "JWT"}
    signing_input = f"{_b64_json(header)}.{_b64_json(dict(claims))}".encode()
    signature = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input.decode()}.{_b64(signature)}"


def installation_token_request(
    credentials: Mapping[str, Any], now: datetime, api_base: str | None
) -> TokenRequest:
    """``POST {api}/app/installations/{id}/access_tokens`` authenticated as the app."""
    claims = github_app_jwt_claims(str(credentials["app_id"]), now)
    jwt = github_app_jwt(str(credentials["private_key"]), claims)
    base = (api_base or GITHUB_API).rstrip("/")
    return TokenRequest(
        url=f"{base}/app/installations/{credentials['installation_id']}/access_tokens",
        headers={
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {jwt}",
            "X-GitHub-Api-Version": "2022-11-28",
        },
    )


def parse_installation_response(
    credentials: Mapping[str, Any], status: int, body: str, now: datetime
) -> dict[str, Any]:
    """The credentials with the new installation token (``token``) and its ``expires_at``.

    Raises:
        RefreshRejected: 401 (bad key or app id), 403, 404 (installation removed), 422.
        RefreshUnavailable: 5xx, 408, 429, or a 2xx that is not a token.
    """
    if status >= 500 or status in _TRANSIENT_STATUSES:
        raise RefreshUnavailable(f"GitHub answered {status} minting a token; retrying later")
    if status >= 400:
        raise RefreshRejected(
            f"GitHub refused an installation token for installation "
            f"{credentials.get('installation_id')!r} of app {credentials.get('app_id')!r} "
            f"(HTTP {status}); check the app id and key, and that the app is still installed"
        )
    payload = _json_object(body) or {}
    token = payload.get("token")
    if not isinstance(token, str) or not token:
        raise RefreshUnavailable(f"GitHub answered {status} without a token; retrying later")
    renewed = dict(credentials)
    renewed["access_token"] = token
    try:
        expires = parse_expires_at(str(payload.get("expires_at")))
    except ValueError:
        # Installation tokens live an hour; assume less if GitHub does not say.
        expires = now + timedelta(minutes=50)
    renewed["expires_at"] = format_expires_at(expires)
    return renewed


# -- helpers ----------------------------------------------------------------------------------


def _json_object(body: str) -> dict[str, Any] | None:
    try:
        value = json.loads(body) if body else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64_json(value: Mapping[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())
