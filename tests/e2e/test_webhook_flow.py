"""One webhook end to end through real processes (issue 2's acceptance 2)."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest
import requests

from tests.support.deployment import Deployment
from tests.support.notifications import notified as _is

pytestmark = pytest.mark.e2e


def test_initial_sync_fills_the_cache_and_notifies_the_app(connected: Deployment) -> None:
    notification = connected.receiver.wait_for(_is("INITIAL", added=3))
    assert notification.signature_ok
    assert notification.body["connectionId"] == "acme"
    assert notification.body["providerConfigKey"] == "tasktracker"
    assert notification.body["syncName"] == "tasks"
    assert notification.body["model"] == "Task"
    ids = sorted(record["id"] for record in connected.records()["records"])
    assert ids == ["T-1", "T-2", "T-3"]


def test_signed_webhook_runs_the_handler_and_notifies_with_a_valid_signature(
    connected: Deployment,
) -> None:
    mark = connected.receiver.mark()
    connected.tracker.update_task("T-2", status="doing", notify=False)
    sent = connected.tracker.send_webhook("task.updated", "T-2")
    assert sent.status == 202

    notification = connected.receiver.wait_for(_is("WEBHOOK", updated=1), after=mark)
    expected = hmac.new(connected.signing_key.encode(), notification.raw, hashlib.sha256)
    assert notification.headers["x-nango-hmac-sha256"] == expected.hexdigest()
    assert notification.body["modifiedAfter"] == notification.body["queryTimeStamp"]

    record = connected.record("T-2")
    assert record["status"] == "doing"
    metadata = record["_nango_metadata"]
    assert metadata["last_action"] == "UPDATED"
    assert metadata["deleted_at"] is None
    assert metadata["cursor"]
    assert metadata["first_seen_at"] < metadata["last_modified_at"]


def test_tampered_signature_is_refused_and_nothing_runs(connected: Deployment) -> None:
    before = connected.record("T-3")
    already = connected.receiver.mark()
    connected.tracker.update_task("T-3", status="done", notify=False)
    sent = connected.tracker.send_webhook("task.updated", "T-3", signature="sha256=" + "0" * 64)
    assert sent.status == 401

    # A correctly signed webhook sent afterwards is processed; the refused one never was.
    connected.tracker.update_task("T-1", assignee="maya", notify=False)
    assert connected.tracker.send_webhook("task.updated", "T-1").status == 202
    connected.receiver.wait_for(_is("WEBHOOK", updated=1), after=already)
    time.sleep(1)
    webhook_runs = [
        item for item in connected.receiver.received[already:]
        if item.body.get("syncType") == "WEBHOOK"
    ]  # fmt: skip
    assert len(webhook_runs) == 1
    assert connected.record("T-3")["status"] == before["status"]
    assert connected.record("T-1")["assignee"] == "maya"


def test_stale_poll_does_not_overwrite_a_newer_webhook_update(connected: Deployment) -> None:
    tracker = connected.tracker
    # The poll will fetch T-1 as "stale"…
    tracker.update_task("T-1", title="stale title", notify=False)
    tracker.hold_list_requests()
    while tracker.list_snapshots.acquire(blocking=False):
        pass  # forget snapshots of earlier polls
    response = requests.post(
        f"{connected.url}/sync/trigger",
        json={"provider_config_key": "tasktracker", "syncs": ["tasks"], "connection_id": "acme"},
        headers=connected.auth(),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    try:
        assert tracker.list_snapshots.acquire(timeout=30), "the poll never fetched the list"
        # …and while its page is in flight, a webhook lands with the newer title.
        mark = connected.receiver.mark()
        tracker.update_task("T-1", title="fresh title", notify=False)
        assert tracker.send_webhook("task.updated", "T-1").status == 202
        connected.receiver.wait_for(_is("WEBHOOK", updated=1), after=mark)
        assert connected.record("T-1")["title"] == "fresh title"
        mark = connected.receiver.mark()
    finally:
        tracker.release_list_requests()

    poll = connected.receiver.wait_for(
        lambda body: body.get("syncType") in {"INCREMENTAL", "INITIAL"} and body.get("success"),
        after=mark,
    )
    assert poll.signature_ok
    stored = connected.record("T-1")
    assert stored["title"] == "fresh title", "the stale poll overwrote the webhook's update"
