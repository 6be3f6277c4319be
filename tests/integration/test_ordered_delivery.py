"""Ordered deliveries and quick recovery of a dead sender (ARCHITECTURE.md §8).

A stream is (app URL, integration, connection, sync, model): a later completion webhook is
never delivered before an earlier one that is still pending, a failing stream holds back
only itself, and a sender that died is replaced within a send lease and a tick. Real
database (SQLite and Postgres), a real HTTP receiver on loopback; time is driven by ``now``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from cache.context import AppContext
from cache.db import session_scope
from cache.models import Connection, Notification, SyncRun, utcnow
from config.integrations import Integrations
from config.settings import load_settings
from ingress.app import create_app
from scheduler.tick import tick
from tests.support.auth import API_KEY, AUTH
from tests.support.concurrency import run_at_once
from tests.support.rows import insert_connection
from tests.support.servers import QuietHandler, serving
from workers.delivery import TIMEOUT_SECONDS, deliver, deliver_many
from workers.outbox import (
    SEND_LEASE_SECONDS,
    Attempt,
    claim,
    claim_many,
    record_completion,
    record_failure,
    record_forward,
    record_outcome,
    retry_notification,
)
from workers.outbox_views import (
    waiting_behind,
)

COUNTS = {"added": 1, "updated": 0, "deleted": 0}


@dataclass
class Receiver:
    """An app endpoint: answers the queued statuses, then 200; records each body in order
    of arrival and the most POSTs of one stream it had in flight at once."""

    url: str = ""
    statuses: list[int] = field(default_factory=list)
    #: (connectionId, model) pairs answered 503 whatever the queue holds.
    failing: set[tuple[str, str]] = field(default_factory=set)
    delay: float = 0.0
    bodies: list[dict] = field(default_factory=list)
    in_flight: dict[tuple, int] = field(default_factory=dict)
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[tuple[str, str | None, int | None]]:
        """``(connectionId, model, sequence)`` of each POST, in arrival order."""
        return [
            (b["connectionId"], b.get("model"), b.get("responseResults", {}).get("added"))
            for b in self.bodies
        ]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(QuietHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            key = (body.get("connectionId"), body.get("syncName"), body.get("model"))
            with state.lock:
                state.bodies.append(body)
                state.in_flight[key] = state.in_flight.get(key, 0) + 1
                state.most_in_flight = max(state.most_in_flight, state.in_flight[key])
                status = state.statuses.pop(0) if state.statuses else 200
                if (body.get("connectionId"), body.get("model")) in state.failing:
                    status = 503
            time.sleep(state.delay)
            with state.lock:
                state.in_flight[key] -= 1
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serving(Handler) as server:
        state.url = f"http://127.0.0.1:{server.server_port}/hooks"
        yield state


@pytest.fixture
def app(make_env, database_url: str, receiver: Receiver) -> Iterator[AppContext]:
    context = AppContext(
        load_settings(
            make_env(
                HOOKSYNC_DATABASE_URL=database_url,
                HOOKSYNC_APP_WEBHOOK_URLS=receiver.url,
                HOOKSYNC_WEBHOOK_SIGNING_KEY="ordered-signing-key",
            )
        )
    )
    context.pin_integrations(Integrations())  # no schedules: the tick needs no file
    yield context
    context.close()


def _complete(ctx: AppContext, connection_id: str, model: str, sequence: int) -> int:
    """Record one completion of ``tasks`` for ``model``; ``added`` carries ``sequence``."""
    with session_scope(ctx.sessions) as session:
        connection = session.scalars(
            select(Connection).where(Connection.connection_id == connection_id)
        ).one_or_none() or insert_connection(session, "tracker", connection_id)
        run = SyncRun(connection_pk=connection.id, sync_name="tasks", kind="poll",
                      sync_type="INCREMENTAL", state="success", started_at=utcnow())  # fmt: skip
        session.add(run)
        session.flush()
        results = {model: {**COUNTS, "added": sequence}}
        (notification_id,) = record_completion(session, ctx.settings, run, results)
        return notification_id


def _row(ctx: AppContext, notification_id: int) -> Notification:
    with ctx.sessions() as session:
        row = session.get(Notification, notification_id)
        assert row is not None
        return row


def _behind(ctx: AppContext, notification_id: int) -> int:
    with ctx.sessions() as session:
        row = session.get(Notification, notification_id)
        assert row is not None
        return waiting_behind(session, [row])[notification_id]


def test_a_later_completion_waits_for_an_earlier_one_being_retried(
    app: AppContext, receiver: Receiver
) -> None:
    receiver.statuses = [503]
    first = _complete(app, "acme", "Task", 1)
    second = _complete(app, "acme", "Task", 2)
    now = utcnow()
    deliver_many(app, [first, second], now=now)
    assert receiver.received() == [("acme", "Task", 1)]  # the second was held back
    assert (_row(app, first).state, _row(app, second).state) == ("pending", "pending")
    assert (_behind(app, first), _behind(app, second)) == (1, 0)

    retry_at = _row(app, first).next_attempt_at
    assert retry_at is not None
    # Its own message, and the sweeper, find the second blocked until the first is done.
    deliver(app, second, now=retry_at - timedelta(seconds=1))
    late = retry_at + timedelta(seconds=app.settings.lease_seconds + 60)
    assert tick(app, late, housekeeping=False).notification_ids == (first,)
    assert receiver.received() == [("acme", "Task", 1)]

    # The first's retry delivers it, and the second follows in the same task.
    deliver(app, first, now=late)
    assert receiver.received() == [("acme", "Task", 1), ("acme", "Task", 1), ("acme", "Task", 2)]
    assert (_row(app, first).state, _row(app, second).state) == ("delivered", "delivered")
    assert _behind(app, first) == 0


def test_a_failing_stream_does_not_hold_another_stream_to_the_same_url(
    app: AppContext, receiver: Receiver
) -> None:
    receiver.failing = {("acme", "Task")}
    held = _complete(app, "acme", "Task", 1)
    behind = _complete(app, "acme", "Task", 2)
    other_model = _complete(app, "acme", "Note", 3)
    other_connection = _complete(app, "globex", "Task", 4)
    with session_scope(app.sessions) as session:
        forwarded = record_forward(session, app.settings, "tracker", "acme", {"event": "x"})
    deliver_many(app, [held, behind, other_model, other_connection, *forwarded], now=utcnow())
    # Sent side by side (arrival order is the network's): all but the held-back follower.
    assert sorted(receiver.received(), key=str) == sorted(
        [("acme", "Task", 1), ("acme", "Note", 3), ("globex", "Task", 4), ("acme", None, None)],
        key=str,
    )
    states = {nid: _row(app, nid).state for nid in (held, behind, other_model, other_connection)}
    assert states == {
        held: "pending", behind: "pending", other_model: "delivered", other_connection: "delivered"
    }  # fmt: skip
    assert _row(app, forwarded[0]).state == "delivered"
    assert _row(app, forwarded[0]).stream is None


def test_a_failure_webhook_joins_its_models_stream(app: AppContext, receiver: Receiver) -> None:
    receiver.statuses = [503]
    completion = _complete(app, "acme", "Task", 1)
    with session_scope(app.sessions) as session:
        run_id = session.scalar(select(Notification.run_id).where(Notification.id == completion))
        run = session.get(SyncRun, run_id)
        assert run is not None
        (failure,) = record_failure(
            session, app.settings, run, "script_error", "boom", model="Task"
        )
    assert _row(app, failure).stream == _row(app, completion).stream
    deliver_many(app, [completion, failure], now=utcnow())
    assert len(receiver.bodies) == 1
    assert _row(app, failure).state == "pending"


def test_a_failed_head_releases_its_stream_and_its_retry_goes_out_later(
    app: AppContext, receiver: Receiver
) -> None:
    receiver.statuses = [400]  # not retried: the head fails at once
    first = _complete(app, "acme", "Task", 1)
    second = _complete(app, "acme", "Task", 2)
    now = utcnow()
    deliver(app, first, now=now)
    assert _row(app, first).state == "failed"
    # The failure released the stream: its follower went out in the same task.
    assert receiver.received() == [("acme", "Task", 1), ("acme", "Task", 2)]
    assert _row(app, second).state == "delivered"

    # The operator's retry sends the old head after its follower (out of order, documented).
    with session_scope(app.sessions) as session:
        retry_notification(session, first, now)
    deliver(app, first, now=now)
    assert receiver.received()[-1] == ("acme", "Task", 1)
    assert _row(app, first).state == "delivered"


def test_concurrent_claims_never_take_two_rows_of_one_stream(
    app: AppContext, receiver: Receiver
) -> None:
    first = _complete(app, "acme", "Task", 1)
    second = _complete(app, "acme", "Task", 2)
    now = utcnow()
    lease = now + timedelta(seconds=SEND_LEASE_SECONDS)
    other = lease + timedelta(microseconds=1)  # each worker's lease is its own
    results = run_at_once(
        [lambda: claim_many(app, [first, second], now, lease)]
        + [lambda: claim_many(app, [second, first], now, other)],
        timeout=30,
    )
    claimed = [row.id for rows, _ in results for row in rows]
    assert claimed == [first]
    assert claim(app, second, now, lease) is None  # still behind the claimed head


def test_concurrent_senders_deliver_a_stream_once_each_in_order_one_at_a_time(
    app: AppContext, receiver: Receiver
) -> None:
    receiver.delay = 0.05
    ids = [_complete(app, "acme", "Task", sequence) for sequence in range(1, 7)]
    now = utcnow()
    run_at_once([lambda: deliver_many(app, ids, now=now)] * 3, timeout=60)
    assert receiver.received() == [("acme", "Task", sequence) for sequence in range(1, 7)]
    assert receiver.most_in_flight == 1
    assert {_row(app, nid).state for nid in ids} == {"delivered"}


def test_a_dead_senders_notification_is_sent_again_within_15_seconds(
    app: AppContext, receiver: Receiver
) -> None:
    assert SEND_LEASE_SECONDS > TIMEOUT_SECONDS
    assert SEND_LEASE_SECONDS + app.settings.tick_seconds <= 15
    notification_id = _complete(app, "acme", "Task", 1)
    now = utcnow()
    dead_lease = now + timedelta(seconds=SEND_LEASE_SECONDS)
    assert claim(app, notification_id, now, dead_lease) is not None  # then its worker dies

    just_before = now + timedelta(seconds=SEND_LEASE_SECONDS - 1)
    assert notification_id not in tick(app, just_before, housekeeping=False).notification_ids
    expired = now + timedelta(seconds=SEND_LEASE_SECONDS)
    assert tick(app, expired, housekeeping=False).notification_ids == (notification_id,)
    # Dispatched again: not re-dispatched on every tick while that message waits.
    later = expired + timedelta(seconds=app.settings.tick_seconds)
    assert notification_id not in tick(app, later, housekeeping=False).notification_ids

    # A new sender claims it; the dead one's late outcome cannot overwrite the new attempt.
    new_lease = later + timedelta(seconds=SEND_LEASE_SECONDS)
    assert claim(app, notification_id, later, new_lease) is not None
    stale = Attempt(503, "HTTP 503", None)
    record_outcome(app, notification_id, receiver.url, dead_lease, 1, stale, later, None)
    row = _row(app, notification_id)
    assert (row.state, row.attempts, row.lease_expires_at) == ("pending", 0, new_lease)
    record_outcome(app, notification_id, receiver.url, new_lease, 1, Attempt(200, None, None),
                   later, None)  # fmt: skip
    record_outcome(app, notification_id, receiver.url, dead_lease, 1, stale, later, None)
    row = _row(app, notification_id)
    assert (row.state, row.attempts, row.last_status) == ("delivered", 1, 200)


def test_a_dispatched_row_is_not_redispatched_at_the_send_lease(
    app: AppContext, receiver: Receiver
) -> None:
    notification_id = _complete(app, "acme", "Task", 1)  # dispatched by its recorder
    soon = utcnow() + timedelta(seconds=SEND_LEASE_SECONDS + app.settings.tick_seconds)
    assert notification_id not in tick(app, soon, housekeeping=False).notification_ids


def test_the_api_and_the_console_show_how_many_wait_behind_the_head(
    app: AppContext, receiver: Receiver
) -> None:
    receiver.failing = {("acme", "Task")}
    head = _complete(app, "acme", "Task", 1)
    followers = [_complete(app, "acme", "Task", n) for n in (2, 3)]
    deliver_many(app, [head, *followers], now=utcnow())
    http = create_app(app).test_client()

    listed = http.get("/notifications?state=pending", headers=AUTH).get_json()["notifications"]
    assert {item["id"]: item["waiting_behind"] for item in listed} == {
        head: 2, followers[0]: 1, followers[1]: 0
    }  # fmt: skip
    shown = http.get(f"/notifications/{head}", headers=AUTH).get_json()["notification"]
    assert (shown["state"], shown["waiting_behind"]) == ("pending", 2)

    console = create_app(app).test_client()
    page = console.post(
        "/ui/login", data={"api_key": API_KEY, "csrf_token": csrf_of(console, "/ui/login")}
    )
    assert page.status_code in (302, 303)
    assert 'data-waiting-behind="2"' in console.get("/ui/notifications").text
    assert 'data-waiting-behind="2"' in console.get(f"/ui/notifications/{head}").text


def csrf_of(client: FlaskClient, path: str) -> str:
    """The CSRF token of the form on ``path``."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text)
    assert found is not None
    return found.group(1)
