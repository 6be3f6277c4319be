"""Coalesced webhook executions: the claimed webhook runs of one batch, run back to back.

The inbox drain (``workers.drain``) routes a batch of webhooks and claims the runs it
created in the same transaction. This module executes them without a Celery hop per run:

1. the runs are grouped by (connection, sync), each group in arrival order;
2. for each group the handler ``on_webhook_payload_received`` is called once per payload, in
   that order, each call with a ``nango`` object of its own (its own merging strategies,
   cursors and counts, exactly as a separate execution would have); their batch operations
   are validated at the call and collected;
3. the group's batches are written in call order, in one transaction, while holding the
   connection's lock once (``RecordStore.apply``) — each batch decided against what the
   earlier ones wrote, so the records end as if every execution had written on its own, one
   after the other;
4. every run is finished in one transaction, and the group's successes make **one**
   completion webhook per model with the summed counts (``finish_runs(coalesce=True)``).

What an app written for Nango sees is unchanged: a completion webhook still follows every
cache change, its counts still add up to what changed, and ``/records`` still returns every
final state. Failures stay per run: a handler that raises fails its own run (with its own
failure notification), and the batches it made before raising are written like the
committed batches of a failed execution.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import Any

from cache.context import AppContext
from cache.lock import free_connection_locks
from cache.models import utcnow
from cache.store import PendingWrite
from config.errors import HooksyncError
from config.integrations import Integrations
from config.logs import log_context
from workers.execution import (
    MAX_ERROR_CHARS,
    LeaseHeartbeat,
    LeaseLost,
    Outcome,
    build_runtime,
    classify_error,
    decrypt_cached,
    finish_runs,
    lock_seconds,
    log_fields,
    record_store,
    report_failure,
    resolve_sync,
    soft_limit,
)
from workers.external import redact, secret_values
from workers.limits import RunDeadline, RunTimeLimitExceeded, soft_time_limit
from workers.runs import Claim
from workers.runtime import NangoRuntime
from workers.scripts import load_function, script_path

__all__ = ["execute_webhook_runs", "group_claims"]

logger = logging.getLogger(__name__)

_HANDLER = "on_webhook_payload_received"

#: Runs a round takes the locks for (at least one connection's). Drains running at the same
#: time each take a round's worth of connections and work on them side by side; one that
#: took every free lock would hold the last ones idle while it ran the first ones, and the
#: others would wait for all of them (serialized drains, seen in the chaos suite at 20
#: webhooks/s). A round still writes and finishes its groups in one transaction each.
ROUND_RUNS = 25


def execute_webhook_runs(
    ctx: AppContext,
    claims: Sequence[Claim],
    deliver: Callable[[list[int]], None] | None = None,
) -> list[int]:
    """Execute webhook runs this worker claimed while routing them; return notification ids.

    ``deliver`` is given each round's notification ids as soon as the round committed
    them, so a worker that dies in a later round leaves none of them recorded but unsent
    (those would wait for the sweeper's long re-dispatch window) and the app hears of the
    first connections' changes without waiting for the last ones'.

    Each connection's groups run, are written and are finished while this worker holds the
    connection's lock, so two batches of one connection never overlap (on one machine or
    several). The batch goes in rounds: each round takes the locks that are free now and
    does those connections' work, about ``ROUND_RUNS`` runs of it; a connection another
    batch holds waits for a later round, by when that batch is usually done with it.

    An outcome whose run is no longer this worker's claim (taken over after its lease ran
    out) is dropped when the runs are finished.
    """
    if not claims:
        return []
    try:
        integrations: Integrations | None = ctx.integrations
        config_error: HooksyncError | None = None
    except HooksyncError as error:
        integrations, config_error = None, error
    first = claims[0]
    heartbeat = LeaseHeartbeat(
        ctx,
        first.run_id,
        first.attempt,
        ctx.settings.run_lease_seconds,
        more={claim.run_id: claim.attempt for claim in claims[1:]},
    )
    heartbeat.start()
    pending = sorted(group_claims(claims), key=lambda group: group[0].connection_pk)
    notification_ids: list[int] = []
    try:
        while pending:
            pending, finished = _run_round(ctx, pending, integrations, config_error, heartbeat)
            notification_ids += finished
            if deliver is not None and finished:
                deliver(finished)
    except LeaseLost as error:
        logger.warning("%s; leaving the batch's remaining runs to their new owners", error)
    finally:
        heartbeat.stop()
    return notification_ids


def _run_round(
    ctx: AppContext,
    pending: list[list[Claim]],
    integrations: Integrations | None,
    config_error: HooksyncError | None,
    heartbeat: LeaseHeartbeat,
) -> tuple[list[list[Claim]], list[int]]:
    """Run, write and finish the groups whose connections are free now; return the groups
    left for a later round and the notifications made."""
    heartbeat.check()
    with ExitStack() as stack:
        try:
            locks = stack.enter_context(
                free_connection_locks(
                    ctx.redis,
                    Counter(claim.connection_pk for group in pending for claim in group),
                    budget=ROUND_RUNS,
                    timeout=lock_seconds(ctx),
                )
            )
        except Exception as error:
            # No lock to be had (Redis down, or a connection held past the wait): nothing
            # left of the batch ran; each run is retried (or failed) as its own execution
            # would be.
            problem = classify_error(error)
            outcomes = [
                (claim, Outcome({}, claim.sync_type, *problem))
                for group in pending
                for claim in group
            ]
            heartbeat.forget([claim.run_id for claim, _ in outcomes])
            return [], finish_runs(ctx, outcomes, integrations, coalesce=True)
        held = {lock.connection_pk for lock in locks}
        groups: list[_Group] = []
        try:
            started = utcnow()  # the execution starts once it holds its connections
            for claims_of_group in pending:
                if claims_of_group[0].connection_pk in held:
                    started_claims = [replace(c, started_at=started) for c in claims_of_group]
                    groups.append(
                        _run_group(ctx, started_claims, integrations, config_error, heartbeat)
                    )
            _write_groups(ctx, [group for group in groups if group.deferred], heartbeat)
            finished = [pair for group in groups for pair in group.outcomes()]
            # Finished while the locks are held, so the next batch of these connections
            # starts after this one ended, in the database as in fact.
            heartbeat.forget([claim.run_id for claim, _ in finished])
            ids = finish_runs(ctx, finished, integrations, coalesce=True)
        finally:
            for group in groups:
                group.close()
    left = [group for group in pending if group[0].connection_pk not in held]
    return left, ids


def group_claims(claims: Sequence[Claim]) -> list[list[Claim]]:
    """Claims grouped by (connection, sync), groups and members in arrival order."""
    groups: dict[tuple[int, str], list[Claim]] = {}
    for claim in claims:
        groups.setdefault((claim.connection_pk, claim.sync_name), []).append(claim)
    return list(groups.values())


@dataclass
class _Group:
    """One (connection, sync) group: its claims, their ``nango`` objects and batches."""

    claims: list[Claim]
    runtimes: list[NangoRuntime] = field(default_factory=list)
    #: Per claim: ``(error_type, message)`` when its handler raised, else None.
    errors: list[tuple[str, str] | None] = field(default_factory=list)
    deferred: list[tuple[NangoRuntime, PendingWrite]] = field(default_factory=list)
    #: Set when nothing of the group was (or will be) written: every run fails with it.
    failure: tuple[str, str] | None = None

    @property
    def connection_pk(self) -> int:
        return self.claims[0].connection_pk

    def fail(self, error_type: str, message: str) -> None:
        self.failure = (error_type, message)
        logger.warning(
            "runs %s failed (%s): %s", [c.run_id for c in self.claims], error_type, message
        )

    def outcomes(self) -> list[tuple[Claim, Outcome]]:
        if self.failure is not None:
            return [(claim, Outcome({}, claim.sync_type, *self.failure)) for claim in self.claims]
        return [
            (claim, Outcome(runtime.results, runtime.sync_type, *(problem or (None, None))))
            for claim, runtime, problem in zip(self.claims, self.runtimes, self.errors, strict=True)
        ]

    def close(self) -> None:
        for runtime in self.runtimes:
            runtime.close()


def _run_group(
    ctx: AppContext,
    claims: list[Claim],
    integrations: Integrations | None,
    config_error: HooksyncError | None,
    heartbeat: LeaseHeartbeat,
) -> _Group:
    """Call the group's handler once per payload, in order, collecting their batches."""
    group = _Group(claims)
    lead = claims[0]
    try:
        if config_error is not None:
            raise config_error
        assert integrations is not None
        provider, sync = resolve_sync(ctx, integrations, lead)
        handler = load_function(
            ctx.settings.integrations_dir, lead.provider_config_key, sync.name, _HANDLER
        )
        credentials = decrypt_cached(ctx.settings.encryption_key, lead.credentials_encrypted)
    except Exception as error:
        # Nothing of the group can run: each run fails alike, as each would have alone.
        group.fail(*classify_error(error))
        return group
    path = script_path(ctx.settings.integrations_dir, lead.provider_config_key, sync.name)
    secrets = secret_values(credentials)
    for claim in claims:
        # The handler's lines (its nango.log calls, its failure) carry this run's ids.
        with log_context(**log_fields(claim)):
            runtime = build_runtime(
                ctx, claim, provider, sync, dict(credentials), heartbeat, deferred=group.deferred
            )
            group.runtimes.append(runtime)
            deadline = RunDeadline(claim.run_id, soft_limit(ctx, sync))
            group.errors.append(_call(handler, runtime, claim, path, secrets, deadline))
    return group


def _write_groups(ctx: AppContext, groups: list[_Group], heartbeat: LeaseHeartbeat) -> None:
    """Write every group's batches in one transaction (their connections' locks are held).

    Groups go in connection order (the order the model counters are locked in); each
    group's batches keep their call order. If the transaction fails, each group is written
    on its own, so a group whose batches the database refuses fails alone.
    """
    if not groups:
        return
    groups = sorted(groups, key=lambda group: group.connection_pk)
    heartbeat.check()  # runs taken away must not write any more
    try:
        _apply(ctx, groups)
        return
    except LeaseLost:
        raise
    except Exception as error:
        if len(groups) == 1:
            _fail_write(groups[0], error, heartbeat)
            return
        logger.info("writing %d groups at once failed (%s); one by one", len(groups), error)
    for group in groups:
        try:
            heartbeat.check()
            _apply(ctx, [group])
        except LeaseLost:
            raise
        except Exception as error:
            _fail_write(group, error, heartbeat)


def _apply(ctx: AppContext, groups: list[_Group]) -> None:
    deferred = [item for group in groups for item in group.deferred]
    results = record_store(ctx).apply([pending for _, pending in deferred])
    for (runtime, pending), result in zip(deferred, results, strict=True):
        runtime.add_result(pending, result)


def _fail_write(group: _Group, error: Exception, heartbeat: LeaseHeartbeat) -> None:
    # Nothing of the group was written: every run is retried (a transient error) or
    # failed alike.
    if heartbeat.is_lost:
        heartbeat.check()
    error_type, message = classify_error(error)
    secrets = secret_values(group.runtimes[0].get_connection().get("credentials") or {})
    group.fail(error_type, redact(message, secrets)[:MAX_ERROR_CHARS])


def _call(
    handler: Any,
    runtime: NangoRuntime,
    claim: Claim,
    path: Any,
    secrets: list[str],
    deadline: RunDeadline,
) -> tuple[str, str] | None:
    """Call the handler for one payload, under its run's soft time limit; its
    ``(error_type, message)`` if it raised."""
    try:
        with soft_time_limit(deadline):
            handler(runtime, claim.payload)
        return None
    except LeaseLost:
        raise
    except Exception as error:
        if isinstance(error, RunTimeLimitExceeded) and not str(error):
            error = deadline.error()  # raised from another thread, without its message
        return report_failure(claim.run_id, error, path, secrets)
