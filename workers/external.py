"""The external-API client scripts call through ``nango.get/post/...`` and ``nango.paginate``.

Retries (tenacity) cover network errors, 429 and 5xx with exponential backoff and jitter,
honouring ``Retry-After``. Any other 4xx fails at once. Every message names the method,
the endpoint path and the status, never the credentials: query strings are left out and
any credential value that still slips into a text (an API echoing a key back) is masked.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import requests
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from config.errors import FatalError, RetriableError
from config.integrations import AuthConfig
from workers.pagination import (
    PageRequest,
    PageWalk,
    Pagination,
    UnexpectedPage,
    select_pagination,
)

__all__ = [
    "ExternalAPIError",
    "ExternalAPIUnavailable",
    "ExternalClient",
    "TokenSource",
    "classify_response",
    "parse_retry_after",
    "redact",
    "secret_values",
]

logger = logging.getLogger(__name__)

#: Statuses worth retrying besides 5xx.
RETRY_STATUSES = frozenset({408, 429})

#: A ``Retry-After`` longer than this is not slept through inside a worker: the call fails
#: as retriable and the next scheduled run picks the work up.
MAX_RETRY_AFTER_SECONDS = 120.0

#: Credential fields whose values are masked wherever a message could contain them.
_SECRET_FIELDS = (
    "api_key",
    "access_token",
    "password",
    "refresh_token",
    "token",
    "secret",
    "client_secret",
    "private_key",
)


class ExternalAPIError(FatalError):
    """The external API refused a request (a 4xx other than 408/429); retrying cannot help."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ExternalAPIUnavailable(RetriableError):
    """The external API stayed unreachable or overloaded through every attempt."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TokenSource(Protocol):
    """Renews the connection's token (``workers.token_refresh.TokenKeeper``)."""

    def fresh(self) -> dict[str, Any]:
        """The credentials, renewed first when their token is about to expire."""
        ...

    def after_unauthorized(self, used_token: str | None) -> dict[str, Any] | None:
        """Renew after a 401 to ``used_token``; None when it cannot be renewed."""
        ...


class _RetryableResponse(Exception):
    """Internal: a response worth retrying, carrying the wait the server asked for."""

    def __init__(self, response: requests.Response, retry_after: float | None) -> None:
        super().__init__(response.status_code)
        self.response = response
        self.retry_after = retry_after


def secret_values(credentials: Mapping[str, Any]) -> list[str]:
    """The credential values to mask, longest first (so no prefix is left behind)."""
    values = {
        str(value)
        for name, value in credentials.items()
        if name in _SECRET_FIELDS and value and len(str(value)) >= 4
    }
    return sorted(values, key=len, reverse=True)


def redact(text: str, secrets: Sequence[str]) -> str:
    """Replace each of ``secrets`` in ``text`` with ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def classify_response(
    response: requests.Response, label: str, redact: Callable[[str], str]
) -> None:
    """The one place HTTP statuses become errors.

    Returns normally for statuses below 400.

    Raises:
        _RetryableResponse: 408, 429 or 5xx.
        ExternalAPIError: Any other 4xx.
    """
    status = response.status_code
    if status < 400:
        return
    if status in RETRY_STATUSES or status >= 500:
        raise _RetryableResponse(response, parse_retry_after(response.headers.get("Retry-After")))
    raise ExternalAPIError(
        f"{label} returned {status}: {redact(_snippet(response))}", status=status
    )


def _snippet(response: requests.Response, limit: int = 300) -> str:
    text = (response.text or "").strip().replace("\n", " ")
    return text[:limit] + ("…" if len(text) > limit else "") if text else response.reason or ""


class _CredentialSafeSession(requests.Session):
    """A session that follows redirects but never carries credentials to another host.

    requests drops ``Authorization`` on a cross-host redirect, but not a provider's own
    header (``auth: header:X-Api-Key``); this drops that one too.
    """

    def __init__(self, credential_header: str | None) -> None:
        super().__init__()
        self._credential_header = credential_header

    def rebuild_auth(self, prepared_request: Any, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)
        if self._credential_header and self.should_strip_auth(
            response.request.url, prepared_request.url
        ):
            prepared_request.headers.pop(self._credential_header, None)


class ExternalClient:
    """HTTP calls against one provider's ``base_url`` with one connection's credentials.

    Args:
        base_url: The provider's API root; None fails every call naming the setting.
        auth: How the credentials are sent.
        credentials: The connection's decrypted credentials.
        timeout: Seconds per attempt (connect and read).
        max_attempts: Attempts per call, the first included.
        sleep: Called with each backoff delay (tests pass a recorder).
        provider_key: Used in messages (``providers.<key>.base_url``).
        tokens: Renews the token before it expires and once after a 401; None sends the
            credentials as given.
    """

    def __init__(
        self,
        base_url: str | None,
        auth: AuthConfig,
        credentials: Mapping[str, Any],
        *,
        timeout: float = 30,
        max_attempts: int = 5,
        sleep: Callable[[float], None] = time.sleep,
        provider_key: str = "<key>",
        max_retry_after: float = MAX_RETRY_AFTER_SECONDS,
        session: requests.Session | None = None,
        tokens: TokenSource | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") if base_url else None
        self.auth = auth
        self._credentials = dict(credentials)
        self.timeout = timeout
        self.max_attempts = max(1, int(max_attempts))
        self.sleep = sleep
        self.provider_key = provider_key
        self.max_retry_after = max_retry_after
        self._session = session or _CredentialSafeSession(
            auth.name if auth.type == "header" and auth.name else None
        )
        self._secrets = secret_values(self._credentials)
        self._tokens = tokens

    def close(self) -> None:
        self._session.close()

    def redact(self, text: str) -> str:
        """Mask every credential value in ``text``."""
        return redact(text, self._secrets)

    # -- requests ---------------------------------------------------------------------------

    def request(
        self,
        method: str,
        endpoint: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        retries: int | None = None,
    ) -> requests.Response:
        """Send one request, retrying transient failures.

        Args:
            method: HTTP method.
            endpoint: A path under ``base_url``, or an absolute URL on the same host
                (e.g. a ``Link`` header's next page).
            params: Query parameters.
            json: A JSON body.
            data: A raw body.
            headers: Extra headers (the auth header is set last).
            retries: Retries after the first attempt; None uses ``max_attempts``.

        Returns:
            The response, with a status below 400.

        Raises:
            ExternalAPIError: A 4xx other than 408/429, or a misconfiguration.
            ExternalAPIUnavailable: Retries exhausted on network errors, 408, 429 or 5xx.
        """
        method = method.upper()
        url, path = self._url(endpoint)
        label = f"{method} {path}"
        attempts = self.max_attempts if retries is None else max(1, int(retries) + 1)
        if self._tokens is not None:
            # A token about to expire is renewed before the request, not after its 401.
            self._use(self._tokens.fresh())
        send = functools.partial(
            self._send, method, url, label, attempts, params, headers, json, data
        )
        try:
            return send()
        except ExternalAPIError as error:
            if error.status != 401 or self._tokens is None:
                raise
            # The token was revoked or expired early: renew it once and try again; a
            # second 401 stands.
            renewed = self._tokens.after_unauthorized(self._credentials.get("access_token"))
            if renewed is None:
                raise
            logger.info("%s: 401; the token was renewed, sending the request again", label)
            self._use(renewed)
            return send()

    def _send(
        self,
        method: str,
        url: str,
        label: str,
        attempts: int,
        params: Mapping[str, Any] | None,
        headers: Mapping[str, str] | None,
        json: Any,
        data: Any,
    ) -> requests.Response:
        """``request`` with the current credentials: retries, then errors by status."""
        query, request_headers, auth = self._apply_auth(params, headers)

        def send() -> requests.Response:
            response = self._session.request(
                method,
                url,
                params=query,
                json=json,
                data=data,
                headers=request_headers,
                auth=auth,
                timeout=self.timeout,
            )
            classify_response(response, label, self.redact)
            return response

        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=self._wait,
            retry=retry_if_exception_type(
                (_RetryableResponse, requests.ConnectionError, requests.Timeout)
            ),
            sleep=self.sleep,
            before_sleep=lambda state: self._log_retry(label, state),
            reraise=True,
        )
        try:
            return retrying(send)
        except _RetryableResponse as error:
            status = error.response.status_code
            raise ExternalAPIUnavailable(
                f"{label} returned {status} after {attempts} attempt(s): "
                f"{self.redact(_snippet(error.response))}",
                status=status,
            ) from None
        except _TooLongRetryAfter as error:
            raise ExternalAPIUnavailable(
                f"{label} returned {error.status} and asked to retry after "
                f"{error.seconds:.0f} s; giving up until the next run",
                status=error.status,
            ) from None
        except (requests.ConnectionError, requests.Timeout) as error:
            raise ExternalAPIUnavailable(
                f"{label} failed after {attempts} attempt(s): {type(error).__name__}: "
                f"{self._describe(error)}"
            ) from None
        except requests.RequestException as error:
            raise ExternalAPIError(
                f"{label} could not be sent: {type(error).__name__}: {self._describe(error)}"
            ) from None

    def paginate(
        self,
        endpoint: str,
        params: Mapping[str, Any] | None = None,
        *,
        paginate: Pagination | Mapping[str, Any] | None = None,
        method: str = "GET",
        data: Any = None,
        response_path: str | None = None,
        cursor_path: str | None = "next_cursor",
        cursor_param: str = "cursor",
        link_header: bool = True,
        limit: int | None = None,
        limit_param: str = "limit",
        max_pages: int | None = None,
        headers: Mapping[str, str] | None = None,
        retries: int | None = None,
    ) -> Iterator[list[Any]]:
        """Yield pages (lists) of a paginated endpoint; ``workers.pagination`` decides each
        request.

        Args:
            endpoint: The first page's path.
            params: Query parameters of the first page.
            paginate: Nango's pagination settings (``type`` ``cursor``, ``link`` or
                ``offset``, ``cursor_path_in_response``, ``offset_name_in_request``, …);
                None: hooksync's keywords below.
            method: HTTP method of every page (POST, PUT and PATCH put the pagination
                parameters into the body unless ``paginate['in_body']`` is False).
            data: The first page's body; a dict is sent as JSON.
            response_path: Dotted path to the list in the JSON body; None: the body is the list.
            cursor_path: Dotted path to the next cursor in the body; None: no body cursor.
            cursor_param: Query parameter the cursor is sent in.
            link_header: Follow a ``Link: <…>; rel="next"`` header when the body has no cursor.
            limit: Page size, sent as ``limit_param``.
            limit_param: Query parameter for ``limit``.
            max_pages: Stop after this many pages.
            headers: Extra headers for every page.
            retries: As for ``request``.

        Raises:
            PaginationConfigError: Bad settings, or ``paginate`` mixed with the keywords.
            ExternalAPIError: A page is not JSON, has no list at ``response_path``, or its
                cursor is not a string or number.
            ExternalAPIUnavailable: As for ``request``.
        """
        config = select_pagination(
            paginate,
            response_path=response_path,
            cursor_path=cursor_path,
            cursor_param=cursor_param,
            link_header=link_header,
            limit=limit,
            limit_param=limit_param,
        )
        method = method.upper()
        walk = PageWalk(
            config,
            method=method,
            endpoint=endpoint,
            params=params,
            data=data,
            base_url=self.base_url,
            max_pages=max_pages,
        )
        page: PageRequest | None = walk.first()
        while page is not None:
            body_kw = {"json": page.body} if isinstance(page.body, dict | list) else {}
            response = self.request(
                method,
                page.endpoint,
                params=page.params,
                data=None if body_kw else page.body,
                headers=headers,
                retries=retries,
                **body_kw,
            )
            label = f"{method} {self._url(page.endpoint)[1]}"
            try:
                body = response.json()
            except ValueError:
                raise ExternalAPIError(f"{label} did not return JSON") from None
            try:
                items = walk.items(body)
                if not items:
                    return
                links = {rel: link["url"] for rel, link in response.links.items() if "url" in link}
                following = walk.after(page, body, links, items)
            except UnexpectedPage as error:
                raise ExternalAPIError(f"{label}: {error}") from None
            if walk.repeated:
                logger.warning("%s: the API repeated a page cursor; stopping", label)
            if config.on_page is not None:
                # Nango's hook, called before the page is handed out so a script can keep
                # the next page's cursor or offset as its checkpoint while saving this one.
                config.on_page(
                    {
                        "nextPageParam": following.page_param if following else None,
                        "response": response,
                    }
                )
            yield items
            page = following

    # -- internals --------------------------------------------------------------------------

    def _url(self, endpoint: str) -> tuple[str, str]:
        """The full URL and the path shown in messages (no query string, no host)."""
        if self.base_url is None:
            raise ExternalAPIError(
                f"providers.{self.provider_key}.base_url is not set; add it to nango.yaml "
                "(or set the environment variable it refers to) so scripts can call the API"
            )
        if endpoint.startswith(("http://", "https://")):
            base, target = urlsplit(self.base_url), urlsplit(endpoint)
            if (target.scheme, target.netloc) != (base.scheme, base.netloc):
                # The credentials are only ever sent to the configured host.
                raise ExternalAPIError(
                    f"refusing to call {target.scheme}://{target.netloc}{target.path}: "
                    f"not on providers.{self.provider_key}.base_url's host"
                )
            return endpoint, target.path or "/"
        url = f"{self.base_url}/{endpoint.lstrip('/')}"
        return url, urlsplit(url).path or "/"

    def _use(self, credentials: Mapping[str, Any]) -> None:
        """Send ``credentials`` from now on; the old values stay masked too."""
        self._credentials = dict(credentials)
        self._secrets = sorted(
            set(self._secrets) | set(secret_values(self._credentials)), key=len, reverse=True
        )

    def _apply_auth(
        self, params: Mapping[str, Any] | None, headers: Mapping[str, str] | None
    ) -> tuple[dict[str, Any], dict[str, str], tuple[str, str] | None]:
        query = dict(params or {})
        request_headers = dict(headers or {})
        kind, name = self.auth.type, self.auth.name
        if kind == "none":
            return query, request_headers, None
        if kind == "basic":
            username = self._credentials.get("username")
            if not username:
                raise ExternalAPIError(self._missing("username", "basic"))
            return (
                query,
                request_headers,
                (str(username), str(self._credentials.get("password") or "")),
            )
        token = self._credentials.get("api_key") or self._credentials.get("access_token")
        if not token:
            raise ExternalAPIError(self._missing("api_key or access_token", kind))
        if kind == "bearer":
            request_headers["Authorization"] = f"Bearer {token}"
        elif kind == "header":
            request_headers[name or "Authorization"] = str(token)
        elif kind == "query":
            query[name or "api_key"] = str(token)
        else:
            raise ExternalAPIError(f"providers.{self.provider_key}.auth.type {kind!r} is unknown")
        return query, request_headers, None

    def _missing(self, field: str, kind: str) -> str:
        credential_type = self._credentials.get("type", "?")
        return (
            f"the connection's {credential_type} credentials have no {field}, which "
            f"providers.{self.provider_key}.auth type {kind!r} needs"
        )

    def _wait(self, state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        if isinstance(error, _RetryableResponse) and error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                raise _TooLongRetryAfter(error.response.status_code, error.retry_after)
            return error.retry_after
        return float(_BACKOFF(state))

    def _log_retry(self, label: str, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        reason = (
            f"status {error.response.status_code}"
            if isinstance(error, _RetryableResponse)
            else type(error).__name__
        )
        delay = state.next_action.sleep if state.next_action else 0
        logger.info(
            "%s: %s, attempt %d, retrying in %.1f s", label, reason, state.attempt_number, delay
        )

    def _describe(self, error: Exception) -> str:
        # requests puts the full URL (query string included) into its messages.
        # Masking the values is what keeps a query-string key out of the message.
        return self.redact(str(error))[:300]


class _TooLongRetryAfter(Exception):
    def __init__(self, status: int, seconds: float) -> None:
        super().__init__(status, seconds)
        self.status = status
        self.seconds = seconds


#: 1 s, 2 s, 4 s ... capped at 60 s, plus up to 1 s of jitter.
_BACKOFF = wait_exponential_jitter(initial=1, max=60, jitter=1)
