"""Two batches of one connection never overlap (``workers.coalesce``, ``cache.lock``).

Two drains run at once in separate threads, each with its own batch of webhooks for the same
two connections. Their handlers call a slow external API (a real HTTP server on loopback)
that notes when each call began and ended; the runs table is read afterwards. Neither may
show two batches of one connection at the same time, while batches of *different*
connections still run side by side (the point of scaling out).
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from cache.context import AppContext
from cache.credentials import encrypt_credentials
from cache.db import session_scope
from cache.models import SyncRun
from config.settings import load_settings
from tests.integration.test_inbox import SECRET, push_all, webhook
from tests.support.concurrency import run_at_once
from tests.support.paths import REPO
from tests.support.rows import insert_connection
from tests.support.servers import QuietHandler, serving
from workers.coalesce import ROUND_RUNS, execute_webhook_runs
from workers.drain import drain_inbox
from workers.events import route_events
from workers.execution import execute_run

#: Seconds each external call waits: long enough that two batches would visibly overlap.
DELAY = 0.05


class _SlowApi(QuietHandler):
    calls: list[tuple[str, float, float]] = []
    guard = threading.Lock()

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        began = time.monotonic()
        time.sleep(DELAY)
        ended = time.monotonic()
        with self.guard:
            self.calls.append((self.path.rsplit("/", 1)[-1].split("-")[0], began, ended))
        self.send_json(b"{}")


@pytest.fixture
def api() -> Iterator[ThreadingHTTPServer]:
    _SlowApi.calls = []
    with serving(_SlowApi) as server:
        yield server


@pytest.fixture
def ctx(
    make_env: Any, database_url: str, api: ThreadingHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AppContext]:
    monkeypatch.setenv("BENCH_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("BENCH_API_URL", f"http://127.0.0.1:{api.server_address[1]}")
    env = make_env(
        HOOKSYNC_DATABASE_URL=database_url,
        HOOKSYNC_INTEGRATIONS_DIR=str(REPO / "bench" / "scale_integration"),
    )
    context = AppContext(load_settings(env))
    with session_scope(context.sessions) as session:
        for account in ("a", "b", "c"):
            insert_connection(
                session,
                "bench",
                account,
                credentials_encrypted=encrypt_credentials(
                    context.settings.encryption_key, {"type": "NONE"}
                ),
            )
    yield context
    context.close()


def overlapping(spans: list[tuple[float, float]]) -> list[tuple[tuple[float, float], ...]]:
    """Pairs of spans that were open at the same time."""
    ordered = sorted(spans)
    return [
        (first, second)
        for index, first in enumerate(ordered)
        for second in ordered[index + 1 :]
        if second[0] < first[1]
    ]


def batch(ctx: AppContext, tag: str, accounts: str) -> list[dict[str, Any]]:
    return [
        webhook(ctx, account, f"{account}-{tag}{n}", n, f"{tag}-{account}-{n}")
        for n in range(4)
        for account in accounts
    ]


def test_two_drains_never_run_one_connections_batches_at_the_same_time(ctx: AppContext) -> None:
    # The first drain takes a batch of a and b; while it runs, a second batch of a and b
    # (and one of c) arrives and a second drain takes it.
    push_all(ctx, batch(ctx, "first", "ab"))
    first = threading.Thread(target=drain_inbox, args=(ctx, "worker-1"))
    first.start()
    time.sleep(0.1)  # the first drain has taken its batch and is calling the API
    push_all(ctx, batch(ctx, "second", "abc"))
    drain_inbox(ctx, "worker-2")
    first.join(60)
    assert not first.is_alive()

    by_account: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for account, began, ended in _SlowApi.calls:
        by_account[account].append((began, ended))
    assert {account: len(spans) for account, spans in by_account.items()} == {
        "a": 8,
        "b": 8,
        "c": 4,
    }
    for account in "ab":
        assert overlapping(by_account[account]) == [], f"connection {account}: calls overlap"
    # c was free while the first drain held a and b: the second drain ran it meanwhile.
    first_spans = by_account["a"] + by_account["b"]
    assert any(start < max(end for _, end in first_spans) for start, _ in by_account["c"]), (
        "the second drain waited for connections it did not need"
    )

    with session_scope(ctx.sessions) as session:
        rows = session.execute(
            select(SyncRun.connection_pk, SyncRun.started_at, SyncRun.finished_at, SyncRun.state)
        ).all()
    assert {state for *_, state in rows} == {"success"}
    executions: dict[int, set[tuple[float, float]]] = defaultdict(set)
    for connection_pk, started_at, finished_at, _ in rows:
        executions[connection_pk].add((started_at.timestamp(), finished_at.timestamp()))
    for connection_pk, spans in executions.items():
        assert overlapping(list(spans)) == [], (
            f"connection {connection_pk}: two batches overlap in the runs table: "
            + json.dumps(sorted(spans))
        )


def test_queued_webhook_runs_of_one_connection_run_one_at_a_time(ctx: AppContext) -> None:
    # Runs queued for hooksync.run_sync (a retry, a replay) rather than run by a drain: two
    # workers executing two of them for one connection at once still take turns.
    results = route_events(ctx, [webhook(ctx, "a", f"a-q{n}", n, f"q-{n}") for n in range(2)])
    run_ids = [run_id for result in results if result for run_id in result.run_ids]
    assert len(run_ids) == 2
    run_at_once([lambda run_id=run_id: execute_run(ctx, run_id) for run_id in run_ids])
    spans = [(began, ended) for account, began, ended in _SlowApi.calls if account == "a"]
    assert len(spans) == 2
    assert overlapping(spans) == [], "two webhook runs of one connection ran at once"


def test_each_round_is_delivered_before_the_next_round_runs(
    make_env: Any, database_url: str, ctx: AppContext
) -> None:
    # More runs of connection a than a round takes: a alone is the first round, b the second.
    # a's completion webhook is handed to delivery before b's handler calls the API, so a
    # worker dying in b's round leaves nothing of a's recorded but unsent.
    env = make_env(
        HOOKSYNC_DATABASE_URL=database_url,
        HOOKSYNC_INTEGRATIONS_DIR=str(REPO / "bench" / "scale_integration"),
        HOOKSYNC_APP_WEBHOOK_URLS="http://127.0.0.1:9/app",
    )
    app = AppContext(load_settings(env))
    try:
        events = [webhook(app, "a", f"a-{n}", n, f"r-a-{n}") for n in range(ROUND_RUNS + 1)]
        events.append(webhook(app, "b", "b-0", 0, "r-b-0"))
        results = route_events(app, events, claim=True)
        claims = [claim for result in results if result for claim in result.claims]
        delivered: list[tuple[float, list[int]]] = []
        ids = execute_webhook_runs(
            app, claims, lambda batch: delivered.append((time.monotonic(), batch))
        )
    finally:
        app.close()
    assert [batch for _, batch in delivered] == [ids[:1], ids[1:]] and len(ids) == 2
    (b_began,) = [began for account, began, _ in _SlowApi.calls if account == "b"]
    assert delivered[0][0] < b_began, "a's round was delivered only after b's round ran"
