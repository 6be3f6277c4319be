"""Credentials that stay valid: token refresh during real executions (workers/token_refresh.py).

A fake provider on a real local HTTP server plays the OAuth2 token endpoint (RFC 6749 §6,
rotating refresh tokens: a spent one is ``invalid_grant``), GitHub's ``access_tokens``
endpoint (it verifies the app JWT's RS256 signature with the public key), and an API that
answers 401 to any token it did not issue. Runs go through ``execute_run`` on a real
database (SQLite and Postgres) and a real Redis, whose connection lock the refreshes take.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from flask.testing import FlaskClient
from sqlalchemy import select

from cache.context import AppContext
from cache.credentials import decrypt_credentials, encrypt_credentials
from cache.db import session_scope
from cache.lock import connection_lock
from cache.models import Connection, Notification, SyncRun, utcnow
from cache.store import RecordStore
from config.settings import load_settings
from ingress.app import create_app
from scheduler.tick import tick
from tests.support.auth import API_KEY
from tests.support.integrations import write_integrations
from tests.support.keys import APP_KEY, APP_PEM
from tests.support.rows import add_connection, load_run, trigger_run
from tests.support.servers import QuietHandler, serving
from workers.execution import execute_run
from workers.token_refresh import TokenKeeper

APP_ID = "401953"
INSTALLATION = "77"
CLIENT_SECRET = "client-secret-7c1d"
KEY, PEM = APP_KEY, APP_PEM

SCRIPT = """
def fetch_data(nango):
    nango.batch_save(nango.get("/items").json(), "Item")
"""


@dataclass
class Provider:
    """The fake provider's state; the handler reads and changes it under ``lock``."""

    #: Access tokens the API accepts.
    valid_tokens: set[str] = field(default_factory=set)
    #: The one refresh token the token endpoint accepts (rotated on every use).
    refresh_token: str = "r1"
    rotate: bool = True
    #: The API refuses every token (revoked app-wide), even freshly issued ones.
    refuse_api: bool = False
    expires_in: int = 3600
    #: ``ok``, ``invalid_grant`` or ``down`` (503).
    mode: str = "ok"
    #: Seconds the token endpoint takes (widens the window of a race).
    delay: float = 0.0
    token_requests: list[dict[str, str]] = field(default_factory=list)
    app_token_requests: list[dict[str, Any]] = field(default_factory=list)
    #: The Authorization header of every API call, in order.
    api_calls: list[str] = field(default_factory=list)
    issued: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self, prefix: str) -> str:
        self.issued += 1
        token = f"{prefix}{self.issued}"
        self.valid_tokens.add(token)
        return token


def _handler(provider: Provider) -> type[QuietHandler]:
    class Handler(QuietHandler):
        def do_GET(self) -> None:
            auth = self.headers.get("Authorization", "")
            with provider.lock:
                provider.api_calls.append(auth)
                ok = auth.removeprefix("Bearer ") in provider.valid_tokens
                ok = ok and not provider.refuse_api
            if not ok:
                return self._json(401, {"message": "Bad credentials"})
            self._json(200, [{"id": "1", "name": "a"}, {"id": "2", "name": "b"}])

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            if self.path == "/token":
                return self._token(body)
            if self.path == f"/app/installations/{INSTALLATION}/access_tokens":
                return self._app_token()
            self._json(404, {})

        def _token(self, body: str) -> None:
            form = {name: values[0] for name, values in parse_qs(body).items()}
            with provider.lock:
                provider.token_requests.append(form)
            time.sleep(provider.delay)
            with provider.lock:
                if provider.mode == "down":
                    return self._json(503, {"error": "temporarily_unavailable"})
                if (
                    provider.mode == "invalid_grant"
                    or form.get("grant_type") != "refresh_token"
                    or form.get("refresh_token") != provider.refresh_token
                    or form.get("client_secret") != CLIENT_SECRET
                ):
                    return self._json(400, {"error": "invalid_grant"})
                reply: dict[str, Any] = {
                    "access_token": provider.issue("at-"),
                    "token_type": "Bearer",
                    "expires_in": provider.expires_in,
                }
                if provider.rotate:
                    provider.refresh_token = f"r{provider.issued + 1}"
                    reply["refresh_token"] = provider.refresh_token
            self._json(200, reply)

        def _app_token(self) -> None:
            scheme, _, jwt = self.headers.get("Authorization", "").partition(" ")
            claims = _verified_claims(jwt) if scheme == "Bearer" else None
            with provider.lock:
                provider.app_token_requests.append(claims or {})
                if claims is None or claims.get("iss") != APP_ID:
                    return self._json(401, {"message": "A JSON web token could not be decoded"})
                expires = datetime.now(UTC) + timedelta(hours=1)
                reply = {
                    "token": provider.issue("ghs_"),
                    "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            self._json(201, reply)

        def _json(self, status: int, body: Any) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    return Handler


def _verified_claims(jwt: str) -> dict[str, Any] | None:
    """The claims of an RS256 JWT signed by the app's key; None when the signature fails."""

    def decode(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    try:
        header, payload, signature = jwt.split(".")
        KEY.public_key().verify(
            decode(signature), f"{header}.{payload}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )
    except (ValueError, InvalidSignature):
        return None
    if json.loads(decode(header)).get("alg") != "RS256":
        return None
    claims: dict[str, Any] = json.loads(decode(payload))
    now = time.time()
    if not claims["iat"] <= now < claims["exp"] or claims["exp"] - claims["iat"] > 600:
        return None
    return claims


@pytest.fixture
def provider() -> Iterator[tuple[Provider, str]]:
    state = Provider()
    with serving(_handler(state)) as server:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def ctx(
    make_env: Callable[..., dict[str, str]],
    database_url: str,
    tmp_path: Path,
    provider: tuple[Provider, str],
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[AppContext]:
    """An AppContext whose integrations call the fake provider (overrides the shared one)."""
    _state, base_url = provider
    monkeypatch.setenv("CLIENTY_CLIENT_SECRET", CLIENT_SECRET)
    nango_yaml = f"""
integrations:
  oauthy:
    syncs:
      items:
        runs: every hour
        auto_start: true
        output: Item
  ghapp:
    syncs:
      items:
        runs: every hour
        auto_start: false
        output: Item
  clienty:
    syncs:
      items:
        runs: every hour
        auto_start: false
        output: Item
models:
  Item:
    id: string
    name: string
providers:
  oauthy:
    base_url: {base_url}
    auth: {{type: bearer}}
  ghapp:
    base_url: {base_url}
    auth: {{type: bearer}}
  clienty:
    base_url: {base_url}
    auth: {{type: bearer}}
    oauth_client:
      token_url: {base_url}/token
      client_id: cid
      client_secret: ${{CLIENTY_CLIENT_SECRET}}
"""
    folder = write_integrations(tmp_path / "integrations", nango_yaml, SCRIPT)
    env = make_env(
        HOOKSYNC_DATABASE_URL=database_url,
        HOOKSYNC_INTEGRATIONS_DIR=str(folder),
        HOOKSYNC_APP_WEBHOOK_URLS="http://127.0.0.1:9/hooks",
    )
    context = AppContext(load_settings(env))
    assert not context.integrations.errors, context.integrations.errors
    yield context
    context.close()


def oauth2(base_url: str, *, access_token: str, expires_in: float) -> dict[str, str]:
    expires = datetime.now(UTC) + timedelta(seconds=expires_in)
    return {
        "type": "OAUTH2",
        "access_token": access_token,
        "refresh_token": "r1",
        "expires_at": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "token_url": f"{base_url}/token",
        "client_id": "cid",
        "client_secret": CLIENT_SECRET,
    }


def stored(ctx: AppContext, pk: int) -> tuple[dict[str, Any], str, str | None]:
    with session_scope(ctx.sessions) as session:
        row = session.get(Connection, pk)
        assert row is not None
        creds = decrypt_credentials(ctx.settings.encryption_key, row.credentials_encrypted)
        return creds, row.state, row.state_error


def run_once(ctx: AppContext, pk: int, sync: str = "items") -> tuple[SyncRun, list[int]]:
    run_id = trigger_run(ctx, pk, sync)
    ids = execute_run(ctx, run_id)
    return load_run(ctx, run_id), ids


def count_records(ctx: AppContext, pk: int) -> int:
    return RecordStore(ctx.sessions, cursor_key=ctx.settings.secret_key).count_records(pk, "Item")


# -- OAuth2 -----------------------------------------------------------------------------------


def test_a_token_expiring_within_the_margin_is_refreshed_before_the_first_call(
    ctx: AppContext, provider: tuple[Provider, str]
) -> None:
    state, base_url = provider
    state.valid_tokens.add("at-old")  # still accepted: only the expiry says "refresh"
    pk = add_connection(
        ctx, "oauthy", "c1", credentials=oauth2(base_url, access_token="at-old", expires_in=60)
    )
    run, _ids = run_once(ctx, pk)
    assert (run.state, run.error_type) == ("success", None)
    assert state.api_calls == ["Bearer at-1"]  # the new token, from the very first call
    assert [request["refresh_token"] for request in state.token_requests] == ["r1"]
    creds, connection_state, _error = stored(ctx, pk)
    assert creds["access_token"] == "at-1" and creds["refresh_token"] == "r2"
    expires = datetime.fromisoformat(creds["expires_at"])
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    assert connection_state == "active"


def test_the_integrations_oauth_client_refreshes_a_connection_without_its_own(
    ctx: AppContext, provider: tuple[Provider, str]
) -> None:
    # Imported with its tokens only: token URL, client id and secret are the integration's
    # (providers.clienty.oauth_client in nango.yaml, the secret from the environment).
    state, base_url = provider
    credentials = oauth2(base_url, access_token="at-old", expires_in=60)
    for name in ("token_url", "client_id", "client_secret"):
        del credentials[name]
    pk = add_connection(ctx, "clienty", "c1", credentials=credentials)
    run, _ids = run_once(ctx, pk)
    assert (run.state, run.error_type) == ("success", None)
    (request,) = state.token_requests
    assert (request["client_id"], request["client_secret"]) == ("cid", CLIENT_SECRET)
    assert state.api_calls == ["Bearer at-1"]
    creds, connection_state, _error = stored(ctx, pk)
    assert creds["access_token"] == "at-1" and connection_state == "active"
    # The integration's client stays the integration's: nothing of it is copied into the
    # connection, so rotating the client secret in the environment takes effect at once.
    assert not {"token_url", "client_id", "client_secret"} & set(creds)


def test_a_401_midway_refreshes_once_and_the_request_is_retried(
    ctx: AppContext, provider: tuple[Provider, str]
) -> None:
    state, base_url = provider
    # Valid for a day by its expiry, but revoked at the provider: the API answers 401.
    pk = add_connection(
        ctx, "oauthy", "c1", credentials=oauth2(base_url, access_token="revoked", expires_in=86400)
    )
    run, _ids = run_once(ctx, pk)
    assert (run.state, run.error_type) == ("success", None)
    assert state.api_calls == ["Bearer revoked", "Bearer at-1"]
    assert len(state.token_requests) == 1
    assert count_records(ctx, pk) == 2


def test_a_second_401_after_the_refresh_fails_the_run(
    ctx: AppContext, provider: tuple[Provider, str]
) -> None:
    state, base_url = provider
    state.refuse_api = True
    pk = add_connection(
        ctx, "oauthy", "c1", credentials=oauth2(base_url, access_token="revoked", expires_in=86400)
    )
    run, _ids = run_once(ctx, pk)
    assert (run.state, run.error_type) == ("error", "external_api_error")
    assert len(state.token_requests) == 1  # once, not in a loop
    assert len(state.api_calls) == 2


def test_two_workers_racing_refresh_the_token_once(
    ctx: AppContext, provider: tuple[Provider, str]
) -> None:
    state, base_url = provider
    state.delay = 0.3  # the first refresh is still in flight when the second asks
    credentials = oauth2(base_url, access_token="at-old", expires_in=30)
    pk = add_connection(ctx, "oauthy", "c1", credentials=credentials)
    start = threading.Barrier(2)
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []

    def worker() -> None:
        # Each keeper reads and writes through its own sessions, as two workers do.
        keeper = TokenKeeper(
            sessions=ctx.sessions,
            redis_client=ctx.redis,
            encryption_key=ctx.settings.encryption_key,
            connection_pk=pk,
            credentials=credentials,
            margin_seconds=300,
        )
        start.wait()
        try:
            results.append(keeper.fresh())
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not errors, errors
    assert len(state.token_requests) == 1  # the second worker used the first one's token
    assert [creds["access_token"] for creds in results] == ["at-1", "at-1"]
    creds, connection_state, _error = stored(ctx, pk)
    assert (creds["refresh_token"], connection_state) == ("r2", "active")


def test_a_rotated_refresh_token_is_stored_and_used_next_time(
    ctx: AppContext, provider: tuple[Provider, str]
) -> None:
    state, base_url = provider
    state.expires_in = 60  # within the margin again at once: every run refreshes
    pk = add_connection(
        ctx, "oauthy", "c1", credentials=oauth2(base_url, access_token="at-old", expires_in=0)
    )
    first, _ = run_once(ctx, pk)
    second, _ = run_once(ctx, pk)
    assert (first.state, second.state) == ("success", "success")
    # The spent r1 would be invalid_grant now: the second refresh sent the rotated r2.
    assert [request["refresh_token"] for request in state.token_requests] == ["r1", "r2"]
    assert stored(ctx, pk)[0]["refresh_token"] == "r3"


def test_invalid_grant_marks_the_connection_and_stops_its_polls_until_new_credentials(
    ctx: AppContext, provider: tuple[Provider, str]
) -> None:
    state, base_url = provider
    client: FlaskClient = create_app(ctx).test_client()
    pk = add_connection(
        ctx,
        "oauthy",
        "c1",
        credentials=oauth2(base_url, access_token="at-old", expires_in=0),
        schedules=True,
    )
    ok, _ = run_once(ctx, pk)
    assert ok.state == "success" and count_records(ctx, pk) == 2

    state.mode = "invalid_grant"  # the user revoked the app
    with session_scope(ctx.sessions) as session:
        row = session.get(Connection, pk)
        assert row is not None
        creds = decrypt_credentials(ctx.settings.encryption_key, row.credentials_encrypted)
    expired = {**creds, "expires_at": "2020-01-01T00:00:00Z"}
    with session_scope(ctx.sessions) as session:
        row = session.get(Connection, pk)
        assert row is not None
        row.credentials_encrypted = encrypt_credentials(ctx.settings.encryption_key, expired)

    failed, ids = run_once(ctx, pk)
    assert (failed.state, failed.error_type) == ("error", "refresh_failed")
    assert CLIENT_SECRET not in (failed.error or "")
    with session_scope(ctx.sessions) as session:
        (body,) = session.scalars(select(Notification.body).where(Notification.id.in_(ids)))
    error = json.loads(body)["error"]
    assert error["type"] == "refresh_failed" and "invalid_grant" in error["description"]
    _creds, connection_state, state_error = stored(ctx, pk)
    assert connection_state == "refresh_failed" and "invalid_grant" in (state_error or "")
    assert count_records(ctx, pk) == 2  # the records stay

    headers = {"Authorization": f"Bearer {API_KEY}"}
    shown = client.get("/connections/c1?provider_config_key=oauthy", headers=headers).json
    assert (shown["state"], shown["credentials"]["type"]) == ("refresh_failed", "OAUTH2")
    assert "refresh_token" not in shown["credentials"]

    # Its polls stop: a due schedule of a refresh_failed connection makes no run.
    later = utcnow() + timedelta(hours=2)
    assert tick(ctx, later).run_ids == ()
    requests_before = len(state.token_requests)

    # New credentials (a fresh consent) make it active and due at once.
    state.mode = "ok"
    state.refresh_token = "r-new"
    fresh = oauth2(base_url, access_token="at-new", expires_in=3600)
    fresh["refresh_token"] = "r-new"
    state.valid_tokens.add("at-new")
    bad = client.patch(
        "/connections/c1",
        headers=headers,
        json={"provider_config_key": "oauthy", "credentials": {**fresh, "expires_at": "soon"}},
    )
    assert bad.status_code == 400 and "credentials.expires_at" in bad.json["error"]["message"]
    assert "r-new" not in bad.get_data(as_text=True)
    answer = client.patch(
        "/connections/c1",
        headers=headers,
        json={"provider_config_key": "oauthy", "credentials": fresh},
    )
    assert answer.status_code == 200, answer.json
    assert (answer.json["state"], answer.json["state_error"]) == ("active", None)
    (run_id,) = tick(ctx, utcnow() + timedelta(seconds=1)).run_ids
    execute_run(ctx, run_id)
    assert load_run(ctx, run_id).state == "success"
    assert len(state.token_requests) == requests_before  # the new token was fresh: no refresh
    assert stored(ctx, pk)[1] == "active"


def test_an_unavailable_token_endpoint_retries_the_run_without_marking_the_connection(
    ctx: AppContext, provider: tuple[Provider, str]
) -> None:
    state, base_url = provider
    state.mode = "down"
    pk = add_connection(
        ctx, "oauthy", "c1", credentials=oauth2(base_url, access_token="at-old", expires_in=0)
    )
    run, ids = run_once(ctx, pk)
    assert ids == []
    assert (run.state, run.error_type) == ("queued", "temporary_error")  # the retry path
    assert stored(ctx, pk)[1:] == ("active", None)


# -- GitHub App -------------------------------------------------------------------------------


def test_a_github_app_installation_token_is_minted_with_a_signed_jwt_and_cached(
    ctx: AppContext, provider: tuple[Provider, str]
) -> None:
    state, _base_url = provider
    credentials = {
        "type": "APP",
        "app_id": APP_ID,
        "installation_id": INSTALLATION,
        "private_key": PEM,
    }
    pk = add_connection(ctx, "ghapp", "org-1", credentials=credentials)
    first, _ = run_once(ctx, pk)
    second, _ = run_once(ctx, pk)
    assert (first.state, second.state) == ("success", "success")
    # Minted once, with a JWT the public key verifies; cached for the second run.
    assert [claims.get("iss") for claims in state.app_token_requests] == [APP_ID]
    assert state.api_calls == ["Bearer ghs_1", "Bearer ghs_1"]
    creds, connection_state, _error = stored(ctx, pk)
    assert creds["access_token"] == "ghs_1" and creds["private_key"] == PEM
    assert connection_state == "active"


def test_a_github_app_key_github_refuses_marks_the_connection(
    ctx: AppContext, provider: tuple[Provider, str]
) -> None:
    state, _base_url = provider
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    wrong_pem = other.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    credentials = {
        "type": "APP",
        "app_id": APP_ID,
        "installation_id": INSTALLATION,
        "private_key": wrong_pem,
    }
    pk = add_connection(ctx, "ghapp", "org-1", credentials=credentials)
    run, _ids = run_once(ctx, pk)
    assert (run.state, run.error_type) == ("error", "refresh_failed")
    assert state.app_token_requests == [{}]  # the signature did not verify
    assert stored(ctx, pk)[1] == "refresh_failed"


def test_a_refresh_finishing_after_new_credentials_were_patched_does_not_overwrite_them(
    ctx: AppContext, provider: tuple[Provider, str]
) -> None:
    state, base_url = provider
    state.delay = 0.5  # the refresh of the old credentials is in flight during the PATCH
    client: FlaskClient = create_app(ctx).test_client()
    old = oauth2(base_url, access_token="at-old", expires_in=0)
    pk = add_connection(ctx, "oauthy", "c1", credentials=old)
    keeper = TokenKeeper(
        sessions=ctx.sessions,
        redis_client=ctx.redis,
        encryption_key=ctx.settings.encryption_key,
        connection_pk=pk,
        credentials=old,
        margin_seconds=300,
    )
    got: list[dict[str, Any]] = []
    refresher = threading.Thread(target=lambda: got.append(keeper.fresh()))
    refresher.start()
    deadline = time.monotonic() + 5
    while not state.token_requests and time.monotonic() < deadline:
        time.sleep(0.01)  # the token request arrived: the refresh holds the old credentials
    new = {**oauth2(base_url, access_token="at-patched", expires_in=3600), "refresh_token": "rp"}
    answer = client.patch(
        "/connections/c1",
        headers={"Authorization": f"Bearer {API_KEY}"},
        json={"provider_config_key": "oauthy", "credentials": new},
    )
    assert answer.status_code == 200
    refresher.join(10)
    assert len(state.token_requests) == 1
    creds, connection_state, _error = stored(ctx, pk)
    assert (creds["access_token"], creds["refresh_token"]) == ("at-patched", "rp")
    assert got[0]["access_token"] == "at-patched"  # the keeper moved to the new ones too
    assert connection_state == "active"


def test_a_refresh_while_the_worker_holds_the_connections_batch_lock_does_not_wait_on_it(
    ctx: AppContext, provider: tuple[Provider, str]
) -> None:
    """A coalesced webhook drain holds the connection's batch lock while its handlers run;
    a handler's API call that needs a refresh must not wait for that lock (its own)."""
    state, base_url = provider
    credentials = oauth2(base_url, access_token="at-old", expires_in=0)
    pk = add_connection(ctx, "oauthy", "c1", credentials=credentials)
    keeper = TokenKeeper(
        sessions=ctx.sessions,
        redis_client=ctx.redis,
        encryption_key=ctx.settings.encryption_key,
        connection_pk=pk,
        credentials=credentials,
        margin_seconds=300,
        lock_wait=2,
    )
    with connection_lock(ctx.redis, pk):
        assert keeper.fresh()["access_token"] == "at-1"
    assert len(state.token_requests) == 1
