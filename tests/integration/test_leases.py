"""Run leases and time limits on a real database and Redis (issue 9).

- Fencing: a run taken over (its lease ran out, another claim took it) can neither renew
  its lease nor finish; its worker stops writing by its own clock once the lease it last
  renewed has run out.
- The sweep's timing: time is driven by passing ``now``, never by waiting.
- Time limits: a script that hangs is stopped by its soft limit, its run ends ``ERROR``
  (``timeout``), the poll slot is freed and a failure notification is recorded; a run whose
  previous attempt outlived the hard limit (its task was killed) ends as a timeout unrun.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from cache.context import AppContext
from cache.credentials import encrypt_credentials
from cache.db import session_scope
from cache.models import Notification, SyncRun, utcnow
from config.errors import ConfigError
from config.settings import load_settings
from tests.integration import test_inbox as inbox_tests
from tests.integration.test_execution import (
    CREDENTIALS,
    TOY_MODELS,
    TOY_PROVIDER,
    TOY_YAML,
    load_schedule,
    store_of,
    wctx,
)
from tests.support.integrations import extend_example_integrations
from tests.support.paths import REPO
from tests.support.rows import add_connection, insert_connection, load_run, trigger_run
from workers import runs
from workers.celery_app import celery_config
from workers.drain import drain_inbox
from workers.execution import LeaseHeartbeat, LeaseLost, _claim, execute_run, finish_runs
from workers.execution import Outcome as RunOutcome
from workers.limits import RunDeadline, RunTimeLimitExceeded, soft_time_limit

__all__ = ["wctx"]  # the fixture, used here with this module's integrations folder

#: The toy sync's script: saves, or hangs as the connection's metadata says.
HANGING_SCRIPT = """
import time


def fetch_data(nango):
    mode = nango.get_metadata().get("mode", "save")
    if mode == "hang":
        time.sleep(3600)
    elif mode == "hang_stubbornly":
        # Swallows the first stop, then tries to write on: refused past the deadline.
        try:
            time.sleep(3600)
        except Exception:
            pass
    nango.batch_save([{"id": "1", "name": "a"}], "Item")


def on_webhook_payload_received(nango, payload):
    nango.batch_save([{"id": str(payload["id"]), "name": "x"}], "Item")
"""


#: A sync with its own time limit (``time_limit``), far below the default soft limit.
QUICK_YAML = """      quick:
        runs: every hour
        auto_start: false
        output: Item
        time_limit: 1s
"""


@pytest.fixture
def integrations_dir(tmp_path: Path) -> Path:
    return extend_example_integrations(
        tmp_path / "integrations",
        syncs=TOY_YAML + QUICK_YAML,
        models=TOY_MODELS,
        provider=TOY_PROVIDER,
        scripts={
            "toy/syncs/items.py": HANGING_SCRIPT,
            "toy/syncs/quick.py": HANGING_SCRIPT,
            "toy/syncs/bare.py": "def fetch_data(nango):\n    pass\n",
        },
    )


@pytest.fixture
def limited(wctx: AppContext) -> Iterator[AppContext]:
    """A context whose runs have a 2 s soft and 30 s hard time limit."""
    ctx = AppContext(
        dataclasses.replace(wctx.settings, run_soft_limit_seconds=2, run_hard_limit_seconds=30)
    )
    yield ctx
    ctx.close()


def failure_bodies(ctx: AppContext, run_id: int) -> list[str]:
    with session_scope(ctx.sessions) as session:
        rows = session.scalars(select(Notification).where(Notification.run_id == run_id)).all()
        return [row.body for row in rows]


# -- fencing and the sweep's timing -------------------------------------------------------------


def test_a_taken_over_run_cannot_renew_nor_finish(wctx: AppContext) -> None:
    pk = add_connection(wctx, "toy", "c1", credentials=CREDENTIALS, schedules=True)
    run_id = trigger_run(wctx, pk, "items")
    t0 = utcnow()
    lease = wctx.settings.run_lease_seconds
    with session_scope(wctx.sessions) as session:
        first = runs.claim(session, run_id, t0, lease)
        assert first is not None and first.attempts == 1
    live = t0 + timedelta(seconds=lease / 2)
    expired = t0 + timedelta(seconds=lease + 1)
    with session_scope(wctx.sessions) as session:
        # Under a live lease: neither swept nor claimable by a second worker.
        assert run_id not in runs.sweep_expired(session, live, 90, 500)
        assert runs.claim(session, run_id, live, lease) is None
    with session_scope(wctx.sessions) as session:
        # The first worker died: its lease ran out, the sweep re-enqueues the run.
        assert run_id in runs.sweep_expired(session, expired, 90, 500)
        second = runs.claim(session, run_id, expired, lease)
        assert second is not None and second.attempts == 2
    with session_scope(wctx.sessions) as session:
        assert runs.renew_leases(session, {run_id: 1}, expired, lease) == 0  # stale token
        assert runs.renew_leases(session, {run_id: 2}, expired, lease) == 1
    stale = _stale_claim(wctx, run_id, attempt=1)
    ids = finish_runs(wctx, [(stale, RunOutcome({"Item": {"added": 1}}, "INITIAL"))], None)
    assert ids == []
    run = load_run(wctx, run_id)
    assert (run.state, run.attempts, run.finished_at) == ("running", 2, None)
    assert failure_bodies(wctx, run_id) == []
    # The owner's finish is taken.
    finish_runs(wctx, [(_stale_claim(wctx, run_id, attempt=2), RunOutcome({}, "INITIAL"))], None)
    assert load_run(wctx, run_id).state == "success"


def _stale_claim(ctx: AppContext, run_id: int, *, attempt: int) -> runs.Claim:
    run = load_run(ctx, run_id)
    return runs.Claim(
        run_id=run_id,
        attempt=attempt,
        kind=run.kind,
        sync_name=run.sync_name,
        sync_type="INITIAL",
        started_at=utcnow(),
        payload=None,
        options={},
        webhook_event_id=None,
        connection_pk=run.connection_pk,
        connection_id="c1",
        provider_config_key="toy",
        credentials_encrypted="",
        metadata={},
        last_sync_date=None,
    )


def test_a_worker_stops_writing_once_its_unrenewed_lease_ran_out(wctx: AppContext) -> None:
    pk = add_connection(wctx, "toy", "c1", credentials=CREDENTIALS, schedules=True)
    run_id = trigger_run(wctx, pk, "items")
    with session_scope(wctx.sessions) as session:
        assert runs.claim(session, run_id, utcnow(), 8) is not None
    heartbeat = LeaseHeartbeat(wctx, run_id, 1, 8, interval=3600)  # never beats by itself
    heartbeat.check()  # the fresh lease is ours
    # No beat got through for a whole lease (the database was unreachable): as the claim
    # would see it elsewhere, the lease is over, so this worker must not write on.
    heartbeat._valid_until -= 8
    with pytest.raises(LeaseLost):
        heartbeat.check()
    assert heartbeat.beat()  # the database is back and nobody took the run: it is ours again
    heartbeat.check()


def _abandon_first_attempt(ctx: AppContext, run_id: int, *, started_at: datetime) -> None:
    """Make ``run_id`` look like a first attempt that began at ``started_at`` and whose
    worker died: still running, its lease already run out."""
    with session_scope(ctx.sessions) as session:
        session.execute(
            update(SyncRun)
            .where(SyncRun.id == run_id)
            .values(
                state="running",
                attempts=1,
                started_at=started_at,
                lease_expires_at=utcnow() - timedelta(seconds=1),
            )
        )


def test_a_claim_records_when_the_attempt_it_took_over_started(wctx: AppContext) -> None:
    pk = add_connection(wctx, "toy", "c1", credentials=CREDENTIALS, schedules=True)
    run_id = trigger_run(wctx, pk, "items")
    began = utcnow() - timedelta(seconds=30)
    _abandon_first_attempt(wctx, run_id, started_at=began)
    claim = _claim(wctx, run_id, wctx.integrations)
    assert claim is not None and claim.attempt == 2
    assert claim.previous_started_at is not None
    assert abs((claim.previous_started_at - began).total_seconds()) < 1


# -- time limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["hang", "hang_stubbornly"])
def test_a_hung_script_is_stopped_by_its_time_limit(limited: AppContext, mode: str) -> None:
    pk = add_connection(
        limited, "toy", "c1", {"mode": mode}, credentials=CREDENTIALS, schedules=True
    )
    run_id = trigger_run(limited, pk, "items")
    ids = execute_run(limited, run_id)
    run = load_run(limited, run_id)
    assert (run.state, run.error_type) == ("error", "timeout")
    assert "time limit of 2 s" in (run.error or "")
    assert load_schedule(limited, pk, "items").active_run_id is None  # the poll slot is free
    (body,) = failure_bodies(limited, run_id)
    assert len(ids) == 1 and '"success":false' in body and "timeout" in body
    assert store_of(limited).count_records(pk, "Item") == 0  # nothing written past the limit


def test_a_sync_s_own_time_limit_stops_it_before_the_default(wctx: AppContext) -> None:
    assert wctx.settings.run_soft_limit_seconds >= 60  # the default would wait much longer
    pk = add_connection(wctx, "toy", "c1", {"mode": "hang"}, credentials=CREDENTIALS)
    run_id = trigger_run(wctx, pk, "quick")
    began = time.monotonic()
    execute_run(wctx, run_id)
    run = load_run(wctx, run_id)
    assert (run.state, run.error_type) == ("error", "timeout")
    assert "time limit of 1 s (the sync's time_limit" in (run.error or "")
    assert time.monotonic() - began < 30


def test_a_run_whose_last_attempt_outlived_the_hard_limit_ends_as_a_timeout(
    limited: AppContext,
) -> None:
    pk = add_connection(limited, "toy", "c1", credentials=CREDENTIALS, schedules=True)
    run_id = trigger_run(limited, pk, "items")
    # the hard limit is 30 s
    _abandon_first_attempt(limited, run_id, started_at=utcnow() - timedelta(seconds=31))
    ids = execute_run(limited, run_id)
    run = load_run(limited, run_id)
    assert (run.state, run.error_type, run.attempts) == ("error", "timeout", 2)
    assert "hard time limit of 30 s" in (run.error or "")
    assert store_of(limited).count_records(pk, "Item") == 0  # not run again
    assert len(ids) == 1
    assert load_schedule(limited, pk, "items").active_run_id is None


def test_soft_time_limit_stops_only_what_it_wraps() -> None:
    deadline = RunDeadline(7, 0.2)
    with pytest.raises(RunTimeLimitExceeded, match="run 7 was stopped after its time limit"):
        with soft_time_limit(deadline):
            time.sleep(30)
    with soft_time_limit(RunDeadline(8, 0.05)):
        pass
    time.sleep(0.2)  # a disarmed limit fires nothing afterwards
    with pytest.raises(RunTimeLimitExceeded):
        deadline.check()


# -- settings and the Celery configuration ---------------------------------------------------------


def test_limits_and_lease_settings(tmp_path: Path) -> None:
    base = {"HOOKSYNC_VAR_DIR": str(tmp_path)}
    settings = load_settings(base)
    assert settings.run_lease_seconds == 8.0
    assert settings.run_hard_limit_seconds > settings.run_soft_limit_seconds
    with pytest.raises(ConfigError, match="HOOKSYNC_RUN_LEASE_SECONDS must be at least 3"):
        load_settings({**base, "HOOKSYNC_RUN_LEASE_SECONDS": "1"})
    with pytest.raises(ConfigError, match=r"HOOKSYNC_RUN_HARD_LIMIT_SECONDS='10' must be above"):
        load_settings(
            {
                **base,
                "HOOKSYNC_RUN_SOFT_LIMIT_SECONDS": "20",
                "HOOKSYNC_RUN_HARD_LIMIT_SECONDS": "10",
            }
        )
    long = load_settings({**base, "HOOKSYNC_RUN_SOFT_LIMIT_SECONDS": "7200"})
    config = celery_config(long, "redis://localhost")
    assert config["broker_transport_options"]["visibility_timeout"] > 7500
    assert config["task_annotations"]["hooksync.run_sync"] == {"time_limit": 7500.0}
    assert config["task_annotations"]["hooksync.drain_inbox"] == {"time_limit": 7500.0}


# -- a hung webhook handler in a coalesced batch ------------------------------------------------

HANGING_HANDLER = """
import time


def fetch_data(nango):
    pass


def on_webhook_payload_received(nango, payload):
    if payload.get("hang"):
        time.sleep(3600)
    nango.batch_save([{"id": str(payload["item_id"]), "account": payload["account"],
                       "seq": payload["seq"], "sent_at": 0}], "Item")
"""


@pytest.fixture
def drain_ctx(
    make_env: Any, database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[AppContext]:
    """The bench integration with a handler that hangs on ``{"hang": true}``; 2 s limit."""
    folder = tmp_path / "bench-integration"
    shutil.copytree(REPO / "bench" / "integration", folder)
    (folder / "bench" / "syncs" / "items.py").write_text(HANGING_HANDLER)
    monkeypatch.setenv("BENCH_WEBHOOK_SECRET", inbox_tests.SECRET)
    env = make_env(
        HOOKSYNC_DATABASE_URL=database_url,
        HOOKSYNC_INTEGRATIONS_DIR=str(folder),
        HOOKSYNC_APP_WEBHOOK_URLS="http://127.0.0.1:9/hooks",
        HOOKSYNC_RUN_SOFT_LIMIT_SECONDS="2",
    )
    ctx = AppContext(load_settings(env))
    with session_scope(ctx.sessions) as session:
        insert_connection(
            session,
            "bench",
            "a",
            credentials_encrypted=encrypt_credentials(
                ctx.settings.encryption_key, {"type": "NONE"}
            ),
        )
    yield ctx
    ctx.close()


def test_a_hung_webhook_handler_fails_only_its_own_run_of_a_coalesced_batch(
    drain_ctx: AppContext,
) -> None:
    ctx = drain_ctx
    hung = inbox_tests.webhook(ctx, "a", "x", 2, "d2")
    body = json.dumps({"account": "a", "item_id": "x", "seq": 2, "hang": True}).encode()
    hung["body_b64"] = base64.b64encode(body).decode()
    hung["headers"]["x-bench-signature"] = (
        "sha256=" + hmac.new(inbox_tests.SECRET.encode(), body, hashlib.sha256).hexdigest()
    )
    inbox_tests.push_all(
        ctx,
        [
            inbox_tests.webhook(ctx, "a", "w", 1, "d1"),
            hung,
            inbox_tests.webhook(ctx, "a", "y", 3, "d3"),
        ],
    )
    drain_inbox(ctx, "worker-1")
    with session_scope(ctx.sessions) as session:
        found = [
            (run.state, run.error_type)
            for run in session.scalars(select(SyncRun).order_by(SyncRun.id))
        ]
        failures = session.scalars(
            select(Notification.body).where(Notification.body.contains('"success":false'))
        ).all()
    assert found == [("success", None), ("error", "timeout"), ("success", None)]
    assert set(inbox_tests.stored_items(ctx)) == {"w", "y"}
    assert len(failures) == 1 and "timeout" in failures[0]
