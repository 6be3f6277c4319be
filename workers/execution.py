"""Run one sync execution: claim the row, run the script, record the outcome.

The order matters and is what makes ``execute_run`` safe to call any number of times for
the same run (at-least-once delivery):

1. **Claim** with one conditional UPDATE: ``queued`` (or ``running`` whose lease expired)
   → ``running``, ``attempts + 1``, a fresh lease. Losing the claim returns ``[]``.
2. **Heartbeat** the lease (``HOOKSYNC_RUN_LEASE_SECONDS``) every third of it while the
   script runs. The heartbeat is fenced by ``attempts``: once the run was handed to another
   worker, this one stops extending it and its next batch raises instead of writing on. A
   worker that could not renew its lease stops writing by its own clock when the lease it
   last renewed runs out, before anybody else may claim the run.
3. **Run** ``fetch_data`` or ``on_webhook_payload_received`` with a ``NangoRuntime``, under
   the run's soft time limit (``workers.limits``). Each batch commits on its own; a re-run
   after a crash converges because saves are idempotent.
4. **Finish** in one transaction, again fenced by ``attempts``: the final state, the
   notifications (outbox rows), the schedule's next slot and the webhook event's state.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session

from cache.context import AppContext
from cache.credentials import decrypt_credentials
from cache.db import session_scope
from cache.lock import connection_lock
from cache.models import (
    Connection,
    RunKind,
    RunState,
    RunSyncType,
    Schedule,
    SyncRun,
    utcnow,
)
from cache.store import PendingWrite, RecordStore, drop_tracking_of_run
from config.errors import BadInputError, ConfigError, FatalError, HooksyncError, RetriableError
from config.integrations import Integrations, ProviderConfig, SyncConfig
from config.logs import log_context
from workers import events as webhook_events
from workers import metrics, runs
from workers.external import ExternalAPIError, ExternalAPIUnavailable, redact, secret_values
from workers.limits import RunDeadline, RunTimeLimitExceeded, soft_time_limit
from workers.outbox import record_completion, record_completions, record_failure
from workers.retry import MAX_ATTEMPTS, MAX_TRANSIENT_ATTEMPTS, retry_delay
from workers.runs import Claim
from workers.runtime import ConnectionInfo, NangoRuntime, ScriptUsageError
from workers.schedules import finish_poll_run, poll_sync_type
from workers.scripts import load_function, script_path
from workers.token_refresh import token_keeper
from workers.tokens import REFRESH_FAILED, RefreshRejected

__all__ = [
    "LeaseHeartbeat",
    "LeaseLost",
    "Outcome",
    "build_runtime",
    "classify_error",
    "close_failed",
    "decrypt_cached",
    "execute_run",
    "finish_runs",
    "log_fields",
    "record_store",
    "report_failure",
    "resolve_sync",
]

logger = logging.getLogger(__name__)

#: Longest error message stored on a run and sent to the app.
MAX_ERROR_CHARS = 2000


class LeaseLost(RetriableError):
    """This worker no longer owns the run (its lease expired and the run moved on)."""


@dataclass(frozen=True)
class Outcome:
    results: dict[str, dict[str, int]]
    sync_type: str
    error_type: str | None = None
    error: str | None = None
    #: The merging strategies the script set (``Runtime.merging_strategies``), recorded with
    #: the run so the console can show the one last used per model.
    strategies: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.error_type is None


def execute_run(ctx: AppContext, run_id: int, *, worker_id: str | None = None) -> list[int]:
    """Execute sync run ``run_id`` if nobody else holds it.

    Args:
        ctx: The process's context.
        run_id: The ``sync_runs`` row.
        worker_id: For logs (the Celery hostname).

    Returns:
        Ids of the notifications created, to enqueue; ``[]`` when the run was not claimed
        (finished already, or running elsewhere under a live lease).
    """
    try:
        integrations: Integrations | None = ctx.integrations
        config_error: HooksyncError | None = None
    except HooksyncError as error:
        integrations, config_error = None, error

    try:
        claim = _claim(ctx, run_id, integrations)
    except (OperationalError, InterfaceError, HooksyncError):
        raise  # the database is unavailable, or the configuration broken: retried as usual
    except Exception as error:
        # RecursionError or a decode error loading the row's JSON (a poison webhook stored
        # before the door refused it): the claim rolled back with it, so attempts never
        # moved and the sweeper would hand the run out forever. It ends here instead.
        return _fail_unloadable(ctx, run_id, error, integrations)
    if claim is None:
        logger.info("run %s: not claimable (finished, or running under a live lease)", run_id)
        return []
    # Every line of the execution, the script's ``nango.log`` ones too, carries its ids.
    with log_context(**log_fields(claim)):
        return _execute_claimed(ctx, claim, integrations, config_error, worker_id)


def log_fields(claim: Claim) -> dict[str, Any]:
    """The ids a run's log lines carry (``config.logs.log_context``): the run, the webhook
    event that made it (None for a poll), its connection, integration and sync."""
    return {
        "run_id": claim.run_id,
        "event_id": claim.webhook_event_id,
        "connection_id": claim.connection_id,
        "integration": claim.provider_config_key,
        "sync": claim.sync_name,
    }


def _execute_claimed(
    ctx: AppContext,
    claim: Claim,
    integrations: Integrations | None,
    config_error: HooksyncError | None,
    worker_id: str | None,
) -> list[int]:
    run_id, settings = claim.run_id, ctx.settings
    logger.info(
        "run %s: attempt %s of %s/%s (%s, %s) on connection %r by %s",
        run_id,
        claim.attempt,
        claim.provider_config_key,
        claim.sync_name,
        claim.kind,
        claim.sync_type,
        claim.connection_id,
        worker_id or "?",
    )
    if claim.attempt > MAX_ATTEMPTS:
        # Every earlier attempt ended without finishing: its worker was killed, ran out of
        # memory, or the script exited the process. Running it again would take yet another
        # worker down, so the run ends here as an error the app is told about.
        return _finish(ctx, claim, _gave_up(claim), integrations)
    if _overran(claim, settings.run_hard_limit_seconds):
        # The previous attempt was still running at its hard limit: its task was killed
        # (or its worker died that late). Running it again would hang again.
        return _finish(ctx, claim, _timed_out(claim, settings.run_hard_limit_seconds), integrations)
    heartbeat = LeaseHeartbeat(ctx, run_id, claim.attempt, settings.run_lease_seconds)
    heartbeat.start()
    try:
        outcome = _execute(ctx, claim, integrations, config_error, heartbeat)
    except LeaseLost as error:
        logger.warning("run %s: %s; leaving it to the new owner", run_id, error)
        return []
    finally:
        heartbeat.stop()
    return _finish(ctx, claim, outcome, integrations)


# -- claim ------------------------------------------------------------------------------------

#: The ``error_type`` of a run whose row cannot be loaded (``_fail_unloadable``).
UNLOADABLE_RUN = "unloadable_run"


def _fail_unloadable(
    ctx: AppContext, run_id: int, error: BaseException, integrations: Integrations | None
) -> list[int]:
    """End run ``run_id`` as ``unloadable_run``; the failure notification's id (as a list)."""
    now = utcnow()
    detail = f"{type(error).__name__}: {str(error)[:200]}"
    message = (
        f"run {run_id} could not be loaded ({detail}); it is not retried. A webhook run's "
        "payload nested too deeply or holding a lone surrogate does this: see its event"
    )
    logger.error("%s", message, exc_info=error)
    with session_scope(ctx.sessions) as session:
        run = runs.fail_unloadable(session, run_id, now, UNLOADABLE_RUN, message)
        if run is None:
            return []
        ids = record_failure(
            session,
            ctx.settings,
            run,
            UNLOADABLE_RUN,
            message,
            started_at=now,
            failed_at=now,
            model=_first_output_model(session, run, integrations),
        )
        if run.webhook_event_id:
            webhook_events.mark_processed(session, [run.webhook_event_id])
    return ids


def _claim(ctx: AppContext, run_id: int, integrations: Integrations | None) -> Claim | None:
    now = utcnow()
    with session_scope(ctx.sessions) as session:
        previous = session.execute(
            select(SyncRun.state, SyncRun.started_at).where(SyncRun.id == run_id)
        ).first()
        run = runs.claim(session, run_id, now, ctx.settings.run_lease_seconds)
        connection = session.get(Connection, run.connection_pk) if run is not None else None
        if run is None or connection is None:  # the connection was deleted meanwhile
            return None
        if run.attempts > 1:
            drop_tracking_of_run(session, run_id)
        last_sync_date = None
        if run.kind == RunKind.POLL.value:
            sync_type, last_sync_date = _poll_type(session, run, connection, integrations)
            runs.set_sync_type(run, sync_type)
        return Claim(
            run_id=run.id,
            attempt=run.attempts,
            kind=run.kind,
            sync_name=run.sync_name,
            sync_type=run.sync_type,
            started_at=now,
            payload=run.payload,
            options=dict(run.options or {}),
            webhook_event_id=run.webhook_event_id,
            connection_pk=connection.id,
            connection_id=connection.connection_id,
            provider_config_key=connection.provider_config_key,
            credentials_encrypted=connection.credentials_encrypted,
            metadata=dict(connection.metadata_json or {}),
            last_sync_date=last_sync_date,
            # A running run's start is its previous attempt's, taken over now.
            previous_started_at=(
                previous.started_at
                if previous is not None and previous.state == RunState.RUNNING.value
                else None
            ),
        )


def _poll_type(
    session: Session, run: SyncRun, connection: Connection, integrations: Integrations | None
) -> tuple[str, datetime | None]:
    """INCREMENTAL (with the last success's start) or INITIAL, decided at the claim."""
    sync = (
        integrations.get_sync(connection.provider_config_key, run.sync_name)
        if integrations
        else None
    )
    last = session.scalar(
        select(Schedule.last_sync_date).where(
            Schedule.connection_pk == connection.id, Schedule.sync_name == run.sync_name
        )
    )
    if sync is None:
        return run.sync_type, None
    reset = bool((run.options or {}).get("reset"))
    sync_type = poll_sync_type(sync, last, reset=reset)
    return sync_type, (last if sync_type == RunSyncType.INCREMENTAL.value else None)


# -- heartbeat --------------------------------------------------------------------------------


class LeaseHeartbeat:
    """Extends the leases of running runs from a background thread.

    Args:
        ctx: For the database.
        run_id: The run.
        attempt: The claim's ``attempts`` value: the fencing token.
        lease_seconds: Each beat sets the lease to now + this.
        interval: Seconds between beats (default a third of the lease).
        more: Further ``{run_id: attempt}`` beaten with it (a coalesced batch); the
            heartbeat counts as lost as soon as any of them was taken away.

    The lease also runs out by this process's clock: when no beat succeeded for a whole
    lease (the database unreachable), ``check`` raises before the lease ends in the
    database, so a worker that may have been taken over writes nothing more.
    """

    def __init__(
        self,
        ctx: AppContext,
        run_id: int,
        attempt: int,
        lease_seconds: float,
        *,
        interval: float | None = None,
        more: dict[int, int] | None = None,
    ) -> None:
        self._ctx = ctx
        self.run_id = run_id
        self.attempt = attempt
        self.runs = {run_id: attempt, **(more or {})}
        # Held by a beat from reading ``runs`` to judging its result, so ``forget`` never
        # lands between (a run finished meanwhile would read as taken away).
        self._runs_lock = threading.Lock()
        self.lease_seconds = lease_seconds
        self.interval = interval if interval is not None else lease_seconds / 3
        # Made right after the claim's commit, so the lease began a little earlier than
        # this; the margin also covers modest clock skew with the claiming machine.
        self._valid_until = time.monotonic() + lease_seconds * (1 - _LEASE_MARGIN)
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"hooksync-heartbeat-{run_id}", daemon=True
        )

    @property
    def is_lost(self) -> bool:
        """True once a run was taken away, or the lease ran out unrenewed."""
        return self._lost.is_set() or time.monotonic() >= self._valid_until

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def check(self) -> None:
        """Raise ``LeaseLost`` once the run has been taken away from this worker."""
        if self.is_lost:
            raise LeaseLost(
                f"run {self.run_id} (attempt {self.attempt}) lost its lease: it was re-queued "
                "or cancelled while this worker was running it"
                if len(self.runs) == 1
                else f"a run of the batch of {len(self.runs)} led by run {self.run_id} lost "
                "its lease: it was re-queued or cancelled while this worker was running it"
            )

    def forget(self, run_ids: list[int]) -> None:
        """Stop beating these runs: they are about to be finished (or handed back)."""
        with self._runs_lock:
            gone = set(run_ids)
            self.runs = {run: attempt for run, attempt in self.runs.items() if run not in gone}

    def beat(self) -> bool:
        """Extend the leases once; False when this worker no longer owns every run."""
        started = time.monotonic()
        with self._runs_lock:
            if not self.runs:
                return True
            with session_scope(self._ctx.sessions) as session:
                owned = runs.renew_leases(session, self.runs, utcnow(), self.lease_seconds)
            if owned != len(self.runs):
                return False
        self._valid_until = started + self.lease_seconds * (1 - _LEASE_MARGIN)
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                if not self.beat():
                    self._lost.set()
                    return
            except Exception:
                # A database hiccup: keep beating; the lease is long enough to ride it out.
                logger.warning("run %s: heartbeat failed", self.run_id, exc_info=True)


#: Share of the lease a worker gives up by its own clock (see ``LeaseHeartbeat``).
_LEASE_MARGIN = 0.1


# -- execution --------------------------------------------------------------------------------


def _execute(
    ctx: AppContext,
    claim: Claim,
    integrations: Integrations | None,
    config_error: HooksyncError | None,
    heartbeat: LeaseHeartbeat,
) -> Outcome:
    runtime: NangoRuntime | None = None
    secrets: list[str] = []
    path: Path | None = None
    deadline = RunDeadline(claim.run_id, ctx.settings.run_soft_limit_seconds)
    try:
        if config_error is not None:
            raise config_error
        assert integrations is not None
        provider, sync = resolve_sync(ctx, integrations, claim)
        deadline = RunDeadline(claim.run_id, soft_limit(ctx, sync))
        path = script_path(ctx.settings.integrations_dir, claim.provider_config_key, sync.name)
        credentials = dict(decrypt_cached(ctx.settings.encryption_key, claim.credentials_encrypted))
        secrets = secret_values(credentials)
        webhook = claim.kind == RunKind.WEBHOOK.value
        runtime = build_runtime(
            ctx, claim, provider, sync, credentials, heartbeat, deadline, connection_held=webhook
        )
        if webhook:
            handler = load_function(
                ctx.settings.integrations_dir,
                claim.provider_config_key,
                sync.name,
                "on_webhook_payload_received",
            )
            # As a drain's batch (workers.coalesce): a webhook's handler runs while holding
            # its connection, so it never overlaps another batch of that connection. A
            # poll's fetch_data takes the lock per batch instead: webhooks must not wait
            # for a long poll, and its ignore_if_modified_after merges keep them safe.
            held = connection_lock(ctx.redis, claim.connection_pk, timeout=lock_seconds(ctx))
            with held, soft_time_limit(deadline):
                heartbeat.check()
                handler(runtime, claim.payload)
        else:
            fetch_data = load_function(
                ctx.settings.integrations_dir, claim.provider_config_key, sync.name, "fetch_data"
            )
            if sync.track_deletes and claim.sync_type == RunSyncType.INITIAL.value:
                # A full run saw everything there is: what it did not save was deleted.
                for model in sync.output:
                    runtime.track_deletes_start(model)
            with soft_time_limit(deadline):
                fetch_data(runtime)
        heartbeat.check()
        runtime.close_tracking(success=True)
        return Outcome(runtime.results, runtime.sync_type, strategies=runtime.merging_strategies)
    except Exception as error:
        if runtime is not None:
            close_failed(runtime, claim.run_id)
        if isinstance(error, LeaseLost):
            raise
        if heartbeat.is_lost:  # the script failed because the run was taken away
            heartbeat.check()
        if isinstance(error, RunTimeLimitExceeded) and not str(error):
            error = deadline.error()  # raised from another thread, without its message
        error_type, message = report_failure(claim.run_id, error, path, secrets)
        results = runtime.results if runtime is not None else {}
        strategies = runtime.merging_strategies if runtime is not None else {}
        return Outcome(results, claim.sync_type, error_type, message, strategies)
    finally:
        if runtime is not None:
            runtime.close()


def resolve_sync(
    ctx: AppContext, integrations: Integrations, claim: Claim
) -> tuple[ProviderConfig, SyncConfig]:
    integration = integrations.by_key.get(claim.provider_config_key)
    sync = integration.syncs.get(claim.sync_name) if integration else None
    if integration is None or sync is None:
        raise ConfigError(
            f"sync {claim.sync_name!r} of integration {claim.provider_config_key!r} is not in "
            f"{ctx.settings.integrations_dir / 'nango.yaml'}; restore it, or delete the "
            "connection's schedule"
        )
    return integration.provider, sync


def lock_seconds(ctx: AppContext) -> float:
    """How long a connection's lock outlives its holder: the run lease. The holder renews
    it every third of that; a killed worker's locks free within one lease, together with
    its runs, instead of keeping the survivors' batches waiting."""
    return ctx.settings.run_lease_seconds


def soft_limit(ctx: AppContext, sync: SyncConfig) -> float:
    """Seconds a run of ``sync`` may take: its ``time_limit``, or the default."""
    settings = ctx.settings
    return sync.soft_limit_seconds(settings.run_soft_limit_seconds, settings.run_hard_limit_seconds)


def build_runtime(
    ctx: AppContext,
    claim: Claim,
    provider: ProviderConfig,
    sync: SyncConfig,
    credentials: dict[str, Any],
    heartbeat: LeaseHeartbeat,
    deadline: RunDeadline | None = None,
    *,
    deferred: list[tuple[NangoRuntime, PendingWrite]] | None = None,
    connection_held: bool = False,
) -> NangoRuntime:
    """The ``nango`` object of one execution.

    Every batch it writes first checks, under the connection's lock, that the run is still
    this worker's (``heartbeat``) and within its time limit (``deadline``).
    ``connection_held``: the caller holds that lock for the whole execution already.
    """
    store = record_store(ctx)

    @contextmanager
    def lock(connection_pk: int) -> Iterator[None]:
        # A run that lost its lease, or ran out of time, must stop writing; checked once the
        # lock is held too, since waiting for it may outlast the lease.
        heartbeat.check()
        if deadline is not None:
            deadline.check()
        if connection_held:
            yield
            return
        with connection_lock(ctx.redis, connection_pk, timeout=lock_seconds(ctx)):
            heartbeat.check()
            yield

    def save_metadata(metadata: dict[str, Any]) -> None:
        with session_scope(ctx.sessions) as session:
            session.execute(
                update(Connection)
                .where(Connection.id == claim.connection_pk)
                .values({Connection.metadata_json: metadata, Connection.updated_at: utcnow()})
                .execution_options(synchronize_session=False)
            )

    return NangoRuntime(
        store=store,
        connection=ConnectionInfo(
            pk=claim.connection_pk,
            connection_id=claim.connection_id,
            provider_config_key=claim.provider_config_key,
            credentials=credentials,
            metadata=claim.metadata,
        ),
        provider=provider,
        run_id=claim.run_id,
        sync_name=sync.name,
        sync_type=claim.sync_type,
        last_sync_date=claim.last_sync_date,
        output_models=sync.output,
        lock=lock,
        save_metadata=save_metadata,
        deferred=deferred,
        tokens=token_keeper(
            ctx, claim.connection_pk, credentials, provider.base_url, provider.oauth_client
        ),
    )


def record_store(ctx: AppContext) -> RecordStore:
    """The process's record store (it keeps per-process statistics bookkeeping)."""
    return ctx.handle(
        _STORE_KEY, lambda: RecordStore(ctx.sessions, cursor_key=ctx.settings.secret_key)
    )


#: Where ``record_store`` keeps the store of an ``AppContext``.
_STORE_KEY = "record_store"


@functools.lru_cache(maxsize=4096)
def decrypt_cached(encryption_key: str, credentials_encrypted: str) -> dict[str, Any]:
    """``decrypt_credentials`` once per (key, ciphertext) in this process.

    New credentials are a new ciphertext (Fernet tokens carry a fresh IV), so an update
    is never served from the cache. Callers must not mutate the returned dict.
    """
    return decrypt_credentials(encryption_key, credentials_encrypted)


def close_failed(runtime: NangoRuntime, run_id: int) -> None:
    try:
        runtime.close_tracking(success=False)
    except Exception:
        # Best effort: an open window of a failed run deletes nothing either way.
        logger.warning("run %s: could not close its tracking windows", run_id, exc_info=True)


def _first_output_model(
    session: Session, run: SyncRun, integrations: Integrations | None
) -> str | None:
    """The model a failure notification names: the sync's first output, as Nango does."""
    connection = session.get(Connection, run.connection_pk)
    if connection is None or integrations is None:
        return None
    sync = integrations.get_sync(connection.provider_config_key, run.sync_name)
    return sync.output[0] if sync is not None and sync.output else None


def report_failure(
    run_id: int, error: BaseException, script: Path | None, secrets: list[str]
) -> tuple[str, str]:
    """Classify a failed execution, log it with its traceback, credentials masked.

    Returns:
        ``(error_type, message)`` as the run and the app get them.
    """
    error_type, message = classify_error(error, script=script)
    message = redact(message, secrets)[:MAX_ERROR_CHARS]
    logger.warning(
        "run %s failed (%s): %s\n%s",
        run_id,
        error_type,
        message,
        redact("".join(traceback.format_exception(error)), secrets),
    )
    return error_type, message


def classify_error(error: BaseException, *, script: Path | None = None) -> tuple[str, str]:
    """Map an execution's exception to ``(error_type, message)`` for the run and the app.

    The message is not yet redacted; the caller masks the connection's credentials.
    """
    if isinstance(error, RunTimeLimitExceeded):
        return "timeout", str(error) or "the run was stopped after its time limit"
    if isinstance(error, RefreshRejected):
        # Before external_api_error: the connection needs new credentials, not a retry.
        return REFRESH_FAILED, str(error)
    if isinstance(error, ExternalAPIError | ExternalAPIUnavailable):
        return "external_api_error", str(error)
    if isinstance(error, ScriptUsageError):
        return "script_usage_error", str(error)
    if isinstance(error, BadInputError):
        return "invalid_records", str(error)
    if isinstance(error, ConfigError):
        return "config_error", str(error)
    if isinstance(error, RetriableError):
        return "temporary_error", str(error)
    if isinstance(error, FatalError):
        return "script_error", str(error)
    where = _script_location(error, script)
    return "script_error", f"{type(error).__name__}: {error}{where}"


def _script_location(error: BaseException, script: Path | None) -> str:
    if script is None:
        return ""
    target = str(script)
    frames = [
        frame for frame in traceback.extract_tb(error.__traceback__) if frame.filename == target
    ]
    if not frames:
        return ""
    frame = frames[-1]
    return f" (at {Path(frame.filename).name}:{frame.lineno} in {frame.name})"


# -- finish -----------------------------------------------------------------------------------


def _gave_up(claim: Claim) -> Outcome:
    return Outcome(
        results={},
        sync_type=claim.sync_type,
        error_type="worker_lost",
        error=(
            f"gave up after {claim.attempt - 1} attempts that ended without finishing "
            "(the worker was killed or ran out of memory, or the script exited the process)"
        ),
    )


def _overran(claim: Claim, hard_limit: float) -> bool:
    previous = claim.previous_started_at
    return previous is not None and (claim.started_at - previous).total_seconds() >= hard_limit


def _timed_out(claim: Claim, hard_limit: float) -> Outcome:
    return Outcome(
        results={},
        sync_type=claim.sync_type,
        error_type="timeout",
        error=(
            f"run {claim.run_id} was stopped after its hard time limit of {hard_limit:g} s "
            "(HOOKSYNC_RUN_HARD_LIMIT_SECONDS): the script ignored the soft limit"
        ),
    )


def _should_retry(outcome: Outcome, attempt: int) -> bool:
    return outcome.error_type == "temporary_error" and attempt < MAX_TRANSIENT_ATTEMPTS


def _finish(
    ctx: AppContext, claim: Claim, outcome: Outcome, integrations: Integrations | None
) -> list[int]:
    return finish_runs(ctx, [(claim, outcome)], integrations)


def finish_runs(
    ctx: AppContext,
    finished: list[tuple[Claim, Outcome]],
    integrations: Integrations | None,
    *,
    coalesce: bool = False,
) -> list[int]:
    """Record the outcomes of claimed runs in one transaction; return notification ids.

    Each run is fenced by its claim's attempt: an outcome whose run was taken away (its
    lease ran out and another worker claimed it) is dropped.

    Args:
        coalesce: The runs are webhook executions run back to back (``workers.coalesce``):
            the successes of each (connection, sync) make one completion webhook per model
            with the summed counts, as if one execution had handled all their payloads.
    """
    if not finished:
        return []
    now = utcnow()
    ids: list[int] = []
    # The scripts' batches are committed already, whatever happens to the outcome below.
    for claim, outcome in finished:
        metrics.count_records(claim.provider_config_key, claim.sync_name, outcome.results)
    counted: list[tuple[Claim, str]] = []
    with session_scope(ctx.sessions) as session:
        loaded = {
            run.id: run
            for run in session.scalars(
                _RUNS_TO_FINISH, {"ids": [claim.run_id for claim, _ in finished]}
            )
        }
        # Into the identity map at once (held here: the map keeps only weak references),
        # since each notification reads its run's connection.
        connections = session.scalars(
            _CONNECTIONS_BY_PK, {"pks": sorted({run.connection_pk for run in loaded.values()})}
        ).all()
        successes: dict[tuple[int, str], list[tuple[SyncRun, Claim, Outcome]]] = {}
        events: set[str] = set()
        writes = runs.RunWrites()
        for claim, outcome in finished:
            run = loaded.get(claim.run_id)
            if run is None or run.state != RunState.RUNNING.value or run.attempts != claim.attempt:
                logger.warning(
                    "run %s: attempt %s finished after losing its lease; its outcome is dropped",
                    claim.run_id,
                    claim.attempt,
                )
                continue
            if _should_retry(outcome, claim.attempt):
                _requeue(writes, run, claim, outcome, now)
                counted.append((claim, "requeued"))
                continue
            _close_run(writes, run, claim, outcome, now)
            counted.append((claim, "success" if outcome.success else "error"))
            if outcome.success and coalesce:
                successes.setdefault((run.connection_pk, run.sync_name), []).append(
                    (run, claim, outcome)
                )
            else:
                ids += _notify_outcome(session, ctx, run, claim, outcome, now, integrations)
            if run.kind == RunKind.POLL.value:
                finish_poll_run(session, run, now, integrations=integrations)
            if run.webhook_event_id:
                events.add(run.webhook_event_id)
        completions = []
        for group in successes.values():
            summed: dict[str, dict[str, int]] = {}
            for _, _, outcome in group:
                for model, counts in outcome.results.items():
                    total = summed.setdefault(model, {"added": 0, "updated": 0, "deleted": 0})
                    for name in total:
                        total[name] += int(counts.get(name, 0))
            first_start = min(claim.started_at for _, claim, _ in group)
            completions.append((group[-1][0], summed, first_start))
        ids += record_completions(session, ctx.settings, completions)
        writes.write(session)
        if events:
            webhook_events.mark_processed(session, sorted(events))
        del connections
    for claim, status in counted:  # committed
        seconds = (now - claim.started_at).total_seconds()
        metrics.count_run(claim.provider_config_key, claim.sync_name, status, seconds)
    return ids


def _requeue(
    writes: runs.RunWrites, run: SyncRun, claim: Claim, outcome: Outcome, now: datetime
) -> None:
    # A transient failure (lock timeout, Redis or the external API unavailable) must not
    # lose a webhook's change: the run goes back to the queue and the sweeper re-enqueues
    # it when this backoff lease runs out. Its batches so far were committed whole, so the
    # re-run converges.
    until = now + timedelta(seconds=retry_delay(claim.attempt))
    writes.requeue(run, until, outcome.error_type, outcome.error)
    logger.warning(
        "run %s: attempt %s failed transiently (%s); retrying from the queue",
        claim.run_id,
        claim.attempt,
        outcome.error,
        extra=log_fields(claim),
    )


def _close_run(
    writes: runs.RunWrites, run: SyncRun, claim: Claim, outcome: Outcome, now: datetime
) -> None:
    writes.close(
        run,
        sync_type=outcome.sync_type,
        results=outcome.results,
        error_type=outcome.error_type,
        error=outcome.error,
        now=now,
        started_at=claim.started_at,
        strategies=outcome.strategies,
    )
    # The runs of a coalesced batch finish together: each line names its own run's ids.
    with log_context(**log_fields(claim)):
        status = "success" if outcome.success else "error"
        logger.info(
            "run %s executed: %s%s",
            run.id,
            status,
            f" ({outcome.error_type})" if outcome.error_type else "",
            extra={"status": status, "error_type": outcome.error_type},
        )
        for model, counts in outcome.results.items():
            added, updated, deleted = (
                int(counts.get(name, 0)) for name in ("added", "updated", "deleted")
            )
            logger.info(
                "run %s merged %s: %d added, %d updated, %d deleted",
                run.id,
                model,
                added,
                updated,
                deleted,
                extra={"model": model, "added": added, "updated": updated, "deleted": deleted},
            )


def _notify_outcome(
    session: Session,
    ctx: AppContext,
    run: SyncRun,
    claim: Claim,
    outcome: Outcome,
    now: datetime,
    integrations: Integrations | None,
) -> list[int]:
    session.flush()
    if outcome.success:
        return record_completion(
            session, ctx.settings, run, outcome.results, started_at=claim.started_at
        )
    return record_failure(
        session,
        ctx.settings,
        run,
        outcome.error_type or "script_error",
        outcome.error or "",
        started_at=claim.started_at,
        failed_at=now,
        model=_first_output_model(session, run, integrations),
    )


# Built once (building a statement costs about as much as running it).
_RUNS_TO_FINISH = (
    select(SyncRun)
    .where(SyncRun.id.in_(bindparam("ids", expanding=True)))
    .order_by(SyncRun.id)
    .with_for_update()
)
_CONNECTIONS_BY_PK = select(Connection).where(Connection.id.in_(bindparam("pks", expanding=True)))
