"""Keep a connection's token fresh during an execution: the I/O around ``workers.tokens``.

A ``TokenKeeper`` is handed to the external-API client. Before a request it renews a token
that expires within ``HOOKSYNC_TOKEN_REFRESH_MARGIN_SECONDS``; after a 401 it renews once.

Renewing happens under the connection's refresh lock, in this order, so that two workers
never refresh the same token twice (providers that rotate refresh tokens invalidate the old
one, so a second refresh with it would fail — and mark a healthy connection failed):

1. take the connection's refresh lock (``refresh_lock``; not the batch lock of
   ``cache.lock``, which a coalesced webhook drain holds while its handlers run — and a
   handler's API call may be what needs the refresh);
2. re-read the stored credentials: if another worker renewed them meanwhile (the stored
   access token is not the one this worker found stale) and they are fresh, use them;
3. else call the token endpoint, store the new credentials encrypted, release the lock.

A refusal for good (``invalid_grant``, 400/401) marks the connection ``refresh_failed``
(its polls stop, ``workers.schedules``) and fails the run with that ``error_type``, which
is what the failure notification carries. A transient failure raises ``RefreshUnavailable``
and the run is retried by the usual path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import redis
import requests
from redis.exceptions import LockError
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from cache.context import AppContext
from cache.credentials import decrypt_credentials, encrypt_credentials
from cache.db import rows_matched, session_scope
from cache.models import Connection, ConnectionState, utcnow
from workers.external import redact, secret_values
from workers.tokens import (
    RefreshRejected,
    RefreshUnavailable,
    can_refresh,
    is_refresh_due,
    parse_refresh_response,
    refresh_request,
    with_client,
)

__all__ = ["TokenKeeper", "mark_refresh_failed", "refresh_lock", "token_keeper"]

logger = logging.getLogger(__name__)

#: Seconds one token-endpoint call may take (connect and read); it runs under the lock.
TOKEN_TIMEOUT_SECONDS = 15.0
#: The refresh lock lives this long unreleased (a crashed holder frees it then): the token
#: call and two short transactions fit well within it.
REFRESH_LOCK_SECONDS = 2 * TOKEN_TIMEOUT_SECONDS + 10
#: Seconds a refresh waits for another worker's refresh of the same connection.
REFRESH_LOCK_WAIT_SECONDS = 60.0


@contextmanager
def refresh_lock(
    redis_client: redis.Redis, connection_pk: int, *, wait: float = REFRESH_LOCK_WAIT_SECONDS
) -> Iterator[None]:
    """Hold the connection's token-refresh lock (Redis) for the block.

    Raises:
        RefreshUnavailable: Redis cannot be reached, or the lock was not free within
            ``wait`` seconds: the run is retried later.
    """
    lock = redis_client.lock(
        f"hooksync:lock:token-refresh:{connection_pk}",
        timeout=REFRESH_LOCK_SECONDS,
        sleep=0.01,
        blocking_timeout=wait,
        thread_local=False,
    )
    try:
        acquired = lock.acquire()
    except redis.RedisError as error:
        raise RefreshUnavailable(
            f"cannot reach Redis to lock the token refresh of connection {connection_pk}: {error}"
        ) from error
    if not acquired:
        raise RefreshUnavailable(
            f"the token refresh of connection {connection_pk} was still locked by another "
            f"worker after {wait:g} s; retrying later"
        )
    try:
        yield
    finally:
        try:
            lock.release()
        except (LockError, redis.RedisError):
            # Expired (the compare-and-set of the store still guards the credentials).
            logger.warning(
                "token refresh lock of connection %s expired before its release",
                connection_pk,
                exc_info=True,
            )


class TokenKeeper:
    """The current credentials of one connection, renewed when due or refused.

    Args:
        sessions: For reading and storing the connection's credentials.
        redis_client: For the connection's lock.
        encryption_key: ``HOOKSYNC_ENCRYPTION_KEY``.
        connection_pk: The connection.
        credentials: Its decrypted credentials as the execution started with them.
        margin_seconds: Renew a token expiring within this many seconds.
        api_base: The provider's ``base_url`` (GitHub App tokens are minted there).
        client: The integration's OAuth client (``oauth_client`` in nango.yaml): the
            ``token_url``, ``client_id`` and ``client_secret`` of OAuth2 credentials that do
            not carry their own. Used for the refresh request only, never stored.
        http: The session token requests go through (tests may pass one).
        clock: Returns the current UTC time.
        lock_wait: Seconds to wait for another worker's refresh of this connection.
    """

    def __init__(
        self,
        *,
        sessions: sessionmaker[Session],
        redis_client: redis.Redis,
        encryption_key: str,
        connection_pk: int,
        credentials: Mapping[str, Any],
        margin_seconds: float,
        api_base: str | None = None,
        client: Mapping[str, str] | None = None,
        http: requests.Session | None = None,
        clock: Callable[[], datetime] = utcnow,
        lock_wait: float = REFRESH_LOCK_WAIT_SECONDS,
    ) -> None:
        self._sessions = sessions
        self._redis = redis_client
        self._key = encryption_key
        self.connection_pk = connection_pk
        self._credentials = dict(credentials)
        self.margin_seconds = margin_seconds
        self.api_base = api_base
        self._client = dict(client or {})
        self._http = http
        self._clock = clock
        self.lock_wait = lock_wait
        #: Token requests this keeper sent (tests and logs).
        self.refreshes = 0

    @property
    def credentials(self) -> dict[str, Any]:
        """The credentials as last known, without renewing them."""
        return dict(self._credentials)

    @property
    def can_refresh(self) -> bool:
        return can_refresh(self._with_client(self._credentials))

    def _with_client(self, credentials: Mapping[str, Any]) -> dict[str, Any]:
        return with_client(credentials, self._client)

    def fresh(self) -> dict[str, Any]:
        """The credentials, renewed first if their token expires within the margin.

        Raises:
            RefreshRejected: The provider refused for good (the connection is now marked).
            RefreshUnavailable: The token endpoint could not be reached or was overloaded.
        """
        if is_refresh_due(self._with_client(self._credentials), self._clock(), self.margin_seconds):
            self._renew(stale_token=self._credentials.get("access_token"))
        return dict(self._credentials)

    def after_unauthorized(self, used_token: str | None) -> dict[str, Any] | None:
        """Renew once after the API answered 401 to ``used_token``.

        Returns:
            The new credentials, or None when these credentials cannot be refreshed (the
            401 then stands).
        """
        if not self.can_refresh:
            return None
        self._renew(stale_token=used_token)
        return dict(self._credentials)

    # -- internals --------------------------------------------------------------------------

    def _renew(self, *, stale_token: Any) -> None:
        with refresh_lock(self._redis, self.connection_pk, wait=self.lock_wait):
            stored, ciphertext = self._load()
            now = self._clock()
            if stored.get("access_token") != stale_token and not is_refresh_due(
                self._with_client(stored), now, self.margin_seconds
            ):
                # Another worker renewed it while this one waited for the lock. Its refresh
                # token may have rotated, so ours is spent: use what it stored.
                logger.info(
                    "connection %s: token already renewed by another worker", self.connection_pk
                )
                self._credentials = stored
                return
            try:
                renewed = self._request(stored, now)
            except RefreshRejected as error:
                if self._mark_failed(ciphertext, str(error)):
                    raise
                # An operator replaced the credentials meanwhile: the refusal was of the
                # old ones; the new ones are used as they are.
                self._credentials, _ciphertext = self._load()
                return
            if not self._store(renewed, ciphertext):
                self._credentials, _ciphertext = self._load()
                return
            self._credentials = renewed
        logger.info("connection %s: token renewed", self.connection_pk)

    def _request(self, stored: dict[str, Any], now: datetime) -> dict[str, Any]:
        effective = self._with_client(stored)
        request = refresh_request(effective, now, self.api_base)
        self.refreshes += 1
        secrets = secret_values(stored) + [str(effective.get("client_secret") or "")]
        # Refreshes are rare (once an hour per connection at most): a session of their own
        # keeps no connection open between them.
        http = self._http or requests.Session()
        try:
            response = http.post(
                request.url,
                data=request.data or None,
                headers=request.headers,
                timeout=TOKEN_TIMEOUT_SECONDS,
                allow_redirects=False,
            )
        except requests.RequestException as error:
            raise RefreshUnavailable(
                f"the token endpoint could not be reached ({type(error).__name__}: "
                f"{redact(str(error), [s for s in secrets if s])[:200]}); retrying later"
            ) from None
        finally:
            if self._http is None:
                http.close()
        return parse_refresh_response(stored, response.status_code, response.text, now)

    def _load(self) -> tuple[dict[str, Any], str]:
        """The stored credentials, and their ciphertext (what ``_store`` compares to)."""
        with session_scope(self._sessions) as session:
            row = session.execute(
                select(Connection.credentials_encrypted, Connection.state).where(
                    Connection.id == self.connection_pk
                )
            ).first()
        if row is None:
            raise RefreshRejected(f"connection {self.connection_pk} was deleted during the run")
        if row.state == ConnectionState.REFRESH_FAILED.value:
            # Another worker's refresh was refused: its refresh token is no better than ours.
            raise RefreshRejected(
                "the connection's token refresh was refused earlier; it needs new "
                "credentials: PATCH them to /connections/<connection_id>"
            )
        ciphertext = row.credentials_encrypted
        return decrypt_credentials(self._key, ciphertext), ciphertext

    def _store(self, credentials: Mapping[str, Any], read: str) -> bool:
        """Store the renewed credentials over those read (``read``, their ciphertext) only.

        ``PATCH /connections/<id>`` does not take the Redis lock: a refresh of the old
        credentials finishing after it must not overwrite the new ones. False when it
        would have.
        """
        with session_scope(self._sessions) as session:
            stored = rows_matched(
                session.execute(
                    update(Connection)
                    .where(
                        Connection.id == self.connection_pk,
                        Connection.credentials_encrypted == read,
                    )
                    .values(credentials_encrypted=encrypt_credentials(self._key, credentials))
                    .execution_options(synchronize_session=False)
                )
            )
        return stored == 1

    def _mark_failed(self, read: str, message: str) -> bool:
        """Mark the connection ``refresh_failed`` if its credentials are still those
        refused (``read``); False when they were replaced meanwhile."""
        marked = mark_refresh_failed(self._sessions, self.connection_pk, message, read=read)
        if marked:
            logger.warning("connection %s: %s", self.connection_pk, message)
        return marked


def token_keeper(
    ctx: AppContext,
    connection_pk: int,
    credentials: Mapping[str, Any],
    api_base: str | None,
    client: Mapping[str, str] | None = None,
) -> TokenKeeper | None:
    """The keeper of an execution's credentials; None for credentials that never expire
    (API keys, OAuth2 tokens without a refresh token)."""
    if not can_refresh(with_client(credentials, client or {})):
        return None
    return TokenKeeper(
        sessions=ctx.sessions,
        redis_client=ctx.redis,
        encryption_key=ctx.settings.encryption_key,
        connection_pk=connection_pk,
        credentials=credentials,
        margin_seconds=ctx.settings.token_refresh_margin_seconds,
        api_base=api_base,
        client=client,
    )


def mark_refresh_failed(
    sessions: sessionmaker[Session], connection_pk: int, message: str, *, read: str | None = None
) -> bool:
    """Mark the connection ``refresh_failed`` with why; its polls stop until new
    credentials are given (``ingress.connections``).

    Args:
        read: When given, only if its credentials are still this ciphertext (the refused
            ones).

    Returns:
        Whether the connection was marked.
    """
    where = [Connection.id == connection_pk]
    if read is not None:
        where.append(Connection.credentials_encrypted == read)
    with session_scope(sessions) as session:
        result = session.execute(
            update(Connection)
            .where(*where)
            .values(state=ConnectionState.REFRESH_FAILED.value, state_error=message[:2000])
            .execution_options(synchronize_session=False)
        )
        return rows_matched(result) == 1
