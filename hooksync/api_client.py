"""A small client of hooksync's own API, for the ``hooksync`` operator commands.

The commands talk to a running ``hooksync web`` the way an app does: over HTTP with the
API key. Where it runs comes from ``HOOKSYNC_URL`` (default
``http://HOOKSYNC_HOST:HOOKSYNC_PORT``, the address ``web`` listens on); the key from
``HOOKSYNC_SECRET_KEY``, else from ``var/secrets.json`` on this machine
(``config.settings.stored_secret_key``). Every failure becomes one ``ApiError`` line fit
for stderr: the API's error message and field, an unreachable server, a refused key. The
key itself never appears in one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, urlparse

import requests

from config.errors import ConfigError, HooksyncError
from config.settings import stored_secret_key

__all__ = ["ApiClient", "ApiError", "base_url_from", "client_from_environment", "path_part"]

#: Seconds to wait for the API; every operator call is one short transaction on the server.
TIMEOUT_SECONDS = 30

#: Addresses ``web`` may listen on that a client cannot connect to: use loopback instead.
_ANY_ADDRESS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class ApiError(HooksyncError):
    """A call to the API failed; the message is the one line to show the operator.

    Args:
        message: What went wrong, naming the field where the API named one.
        status: The HTTP status, None when no answer came.
        code: The API's error code, when it sent one.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


def base_url_from(environ: Mapping[str, str]) -> str:
    """``HOOKSYNC_URL``, else ``http://HOOKSYNC_HOST:HOOKSYNC_PORT`` (no trailing slash).

    Raises:
        ConfigError: ``HOOKSYNC_URL`` is not an http(s) URL.
    """
    url = environ.get("HOOKSYNC_URL", "").strip()
    if url:
        parsed = urlparse(url)
        if parsed.scheme not in {"http", "https"} or not parsed.netloc:
            raise ConfigError(
                f"HOOKSYNC_URL must be an http:// or https:// URL like http://127.0.0.1:3003, "
                f"got {url.split('?', 1)[0]!r}"
            )
        return url.rstrip("/")
    host = environ.get("HOOKSYNC_HOST", "127.0.0.1").strip()
    host = _ANY_ADDRESS.get(host, host)
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return f"http://{host}:{environ.get('HOOKSYNC_PORT', '').strip() or '3003'}"


def client_from_environment(environ: Mapping[str, str] | None = None) -> ApiClient:
    """The client for the API this machine's settings point at."""
    env = os.environ if environ is None else environ
    return ApiClient(base_url_from(env), stored_secret_key(env))


class ApiClient:
    """Calls hooksync's API with the key; answers are the decoded JSON bodies.

    Args:
        base_url: Where ``hooksync web`` answers, e.g. ``http://127.0.0.1:3003``.
        api_key: ``HOOKSYNC_SECRET_KEY``; None sends no key (the API answers 401).
    """

    def __init__(self, base_url: str, api_key: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._session = requests.Session()

    def __repr__(self) -> str:  # the key stays out of any traceback or log
        return f"ApiClient({self.base_url!r})"

    def get(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        return self.request("GET", path, params=params, headers=headers)

    def post(self, path: str, body: Any = None, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=body, params=params)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """One API call.

        Raises:
            ApiError: No answer, or an answer other than 2xx with a JSON body.
        """
        sent = dict(headers or {})
        if self._api_key:
            sent["Authorization"] = f"Bearer {self._api_key}"
        query = {name: value for name, value in (params or {}).items() if value is not None}
        try:
            response = self._session.request(
                method,
                self.base_url + path,
                params=query,
                json=json,
                headers=sent,
                timeout=TIMEOUT_SECONDS,
            )
        except requests.ConnectionError:
            raise ApiError(
                f"cannot reach hooksync at {self.base_url} (is `hooksync web` running? "
                "set HOOKSYNC_URL)"
            ) from None
        except requests.Timeout:
            raise ApiError(
                f"hooksync at {self.base_url} did not answer within {TIMEOUT_SECONDS}s"
            ) from None
        except requests.RequestException as error:
            raise ApiError(f"request to {self.base_url} failed: {type(error).__name__}") from None
        return _decode(response, self.base_url, has_key=bool(self._api_key))

    def close(self) -> None:
        self._session.close()


def path_part(value: str) -> str:
    """``value`` escaped as one segment of a URL path."""
    return quote(value, safe="")


def _decode(response: requests.Response, base_url: str, *, has_key: bool) -> Any:
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 401:
        hint = (
            "the API key was refused: set HOOKSYNC_SECRET_KEY to the key `hooksync web` uses"
            if has_key
            else "no API key: set HOOKSYNC_SECRET_KEY to the key `hooksync web` uses"
        )
        raise ApiError(hint, status=401, code="unauthorized")
    if 200 <= response.status_code < 300 and body is not None:
        return body
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        named = error.get("field")
        # Most messages start with the field already ("limit: must be …").
        field = f" [field {named}]" if named and not error["message"].startswith(named) else ""
        raise ApiError(
            f"{error['message']}{field} (HTTP {response.status_code})",
            status=response.status_code,
            code=str(error.get("code") or ""),
        )
    raise ApiError(
        f"unexpected answer from {base_url}: HTTP {response.status_code} "
        f"{(response.text or '')[:120]!r} (is HOOKSYNC_URL pointing at hooksync?)",
        status=response.status_code,
    )
