"""The official clients of our contracts, run against a live deployment: the Nango Node
client (records, sync control, connections, scripts config, completion-webhook
verification) and the Python standardwebhooks package (the Standard Webhooks headers of
every notification).

Each Node call runs ``node/contract.mjs <call> <json args>`` and its answer is checked
against what our API (called with ``requests``) says, so a client call that sends a
parameter we ignore, or reads a field we do not send, fails here. The tests work on
connections of their own (``node-*``, workspace ``ws_node``) and leave the session's
``acme`` connection, the tracker's tasks and the schedules as they found them: the
e2e tests that run after these share the deployment.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from cache.context import AppContext
from cache.db import session_scope
from cache.models import SyncRun
from config.settings import load_settings
from demo.app_receiver import AppReceiver, Received
from demo.http_thread import ServerThread
from tests.support.deployment import Deployment
from tests.support.rows import add_connection, trigger_run
from tests.support.servers import skip_or_fail
from tests.support.tasktracker import TASKTRACKER_ENV
from workers.delivery import deliver
from workers.outbox import record_completion

pytestmark = pytest.mark.e2e

NODE_DIR = Path(__file__).resolve().parent / "node"
KEY = "tasktracker"
#: The connection the records and sync-control tests use; webhooks reach it through its
#: own workspace, never through ``acme``'s.
NODE_CONNECTION = "node-records"
NODE_WORKSPACE = "ws_node"


# -- running the client -------------------------------------------------------------------


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@nangohq" / "node").exists():
        skip_or_fail("node or @nangohq/node is not installed (make test installs it with npm)")
    assert node is not None
    return node


def call(url: str, api_key: str, signing_key: str, name: str, **args: Any) -> Any:
    """One call of the Node client (a function of ``node/*.mjs``); its JSON answer."""
    result = subprocess.run(
        [_node(), str(NODE_DIR / "contract.mjs"), name, json.dumps(args)],
        env={**os.environ, "HOOKSYNC_URL": url, "API_KEY": api_key, "SIGNING_KEY": signing_key},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{name}: {result.stderr}"
    return json.loads(result.stdout)


def client(deployment: Deployment) -> Callable[..., Any]:
    def run(name: str, **args: Any) -> Any:
        return call(deployment.url, deployment.api_key, deployment.signing_key, name, **args)

    return run


def api(deployment: Deployment, method: str, path: str, **kwargs: Any) -> requests.Response:
    """Our API as the reference the client's answers are checked against."""
    return requests.request(
        method, f"{deployment.url}{path}", headers=deployment.auth(), timeout=10, **kwargs
    )


def of(connection_id: str, sync_type: str | None = None) -> Callable[[dict[str, Any]], bool]:
    """A completion webhook of this connection (and sync type), successful."""

    def predicate(body: dict[str, Any]) -> bool:
        return (
            body.get("connectionId") == connection_id
            and body.get("success") is True
            and (sync_type is None or body.get("syncType") == sync_type)
        )

    return predicate


def create_connection(deployment: Deployment, connection_id: str, workspace: str) -> None:
    """Create a connection to the tracker and wait for its initial sync's webhook, so no run
    of it is in flight when a test changes or deletes it."""
    mark = deployment.receiver.mark()
    response = api(
        deployment,
        "POST",
        "/connections",
        json={
            "provider_config_key": KEY,
            "connection_id": connection_id,
            "credentials": {"type": "API_KEY", "api_key": deployment.tracker.api_token},
            "metadata": {"workspace_id": workspace},
        },
    )
    assert response.status_code == 201, response.text
    deployment.receiver.wait_for(of(connection_id, "INITIAL"), timeout=60, after=mark)


def send_tracker_webhook(deployment: Deployment, event: str, task_id: str) -> Received:
    """A signed tracker webhook for workspace ``ws_node`` (so it reaches only
    ``node-records``), and the completion webhook it leads to."""
    body = json.dumps({"event": event, "task_id": task_id, "workspace_id": NODE_WORKSPACE})
    mark = deployment.receiver.mark()
    response = requests.post(
        f"{deployment.url}/webhook/{KEY}",
        data=body.encode(),
        headers={
            "Content-Type": "application/json",
            "X-Tracker-Event": event,
            "X-Tracker-Delivery": uuid.uuid4().hex,
            "X-Tracker-Signature": deployment.tracker.sign(body.encode()),
        },
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return deployment.receiver.wait_for(of(NODE_CONNECTION, "WEBHOOK"), timeout=60, after=mark)


@pytest.fixture(scope="module")
def node_records(connected: Deployment) -> Iterator[Deployment]:
    """``node-records`` with T-1 and T-2 live and T-3 deleted by a webhook (after them)."""
    create_connection(connected, NODE_CONNECTION, NODE_WORKSPACE)
    deleted = send_tracker_webhook(connected, "task.deleted", "T-3")
    assert deleted.body["responseResults"] == {"added": 0, "updated": 0, "deleted": 1}
    yield connected
    api(connected, "DELETE", f"/connections/{NODE_CONNECTION}?provider_config_key={KEY}")


def all_records(deployment: Deployment, **params: Any) -> list[dict[str, Any]]:
    """Every record of ``node-records`` matching ``params``, from the records API."""
    records: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = deployment.records(
            NODE_CONNECTION, limit=100, **params, **({"cursor": cursor} if cursor else {})
        )
        records += page["records"]
        cursor = page["next_cursor"]
        if not cursor:
            return records


def seen(answer: dict[str, Any]) -> list[str]:
    assert "error" not in answer, answer
    return [record["id"] for page in answer["pages"] for record in page]


def status_of(deployment: Deployment, connection_id: str = NODE_CONNECTION) -> dict[str, Any]:
    response = api(
        deployment,
        "GET",
        "/sync/status",
        params={"provider_config_key": KEY, "syncs": "tasks", "connection_id": connection_id},
    )
    assert response.status_code == 200, response.text
    (entry,) = response.json()["syncs"]
    return entry


# -- records -----------------------------------------------------------------------------


def test_list_records_pages_through_every_record_once(connected: Deployment) -> None:
    nango = client(connected)
    answer = nango("listRecords", connectionId="acme", limit=2)
    ids = seen(answer)
    assert sorted(ids) == sorted(r["id"] for r in connected.records(limit=100)["records"])
    assert len(ids) == len(set(ids)), "a record was returned twice while paging"
    assert len(answer["pages"]) >= 2 and all(len(page) <= 2 for page in answer["pages"])
    assert nango("listRecordsWithWrongKey", connectionId="acme")["error"]["status"] == 401


def test_list_records_modified_after_filter_and_ids(node_records: Deployment) -> None:
    nango = client(node_records)
    everything = {record["id"]: record for record in all_records(node_records)}
    assert sorted(everything) == ["T-1", "T-2", "T-3"]
    assert everything["T-3"]["_nango_metadata"]["last_action"] == "DELETED"

    # modifiedAfter: the newest change before the deletion; only T-3 changed after it.
    before = max(
        record["_nango_metadata"]["last_modified_at"]
        for record in everything.values()
        if record["id"] != "T-3"
    )
    answer = seen(nango("listRecords", connectionId=NODE_CONNECTION, modifiedAfter=before))
    assert answer == [r["id"] for r in all_records(node_records, modified_after=before)]
    assert answer == ["T-3"]

    # filter: by the last action the API reports for each record.
    for word, action in (("deleted", "DELETED"), ("added", "ADDED")):
        answer = seen(nango("listRecords", connectionId=NODE_CONNECTION, filter=word))
        expected = sorted(
            key for key, r in everything.items() if r["_nango_metadata"]["last_action"] == action
        )
        assert sorted(answer) == expected and expected, (word, answer)
    answer = seen(nango("listRecords", connectionId=NODE_CONNECTION, filter="added,deleted"))
    assert sorted(answer) == ["T-1", "T-2", "T-3"]
    # Nothing was updated: the API says so too, and an ignored filter would list all three.
    answer = seen(nango("listRecords", connectionId=NODE_CONNECTION, filter="updated"))
    assert answer == [r["id"] for r in all_records(node_records, filter="updated")] == []

    # ids: repeated query parameters, as the client sends them.
    answer = seen(nango("listRecords", connectionId=NODE_CONNECTION, ids=["T-3", "T-1"]))
    assert sorted(answer) == ["T-1", "T-3"]
    refused = nango("listRecords", connectionId=NODE_CONNECTION, filter="changed")
    assert refused["error"]["status"] == 400
    assert "'changed'" in refused["error"]["data"]["error"]["message"]


# -- sync control ------------------------------------------------------------------------


def test_sync_status_matches_the_api(node_records: Deployment) -> None:
    answer = client(node_records)("syncStatus", syncs=["tasks"], connectionId=NODE_CONNECTION)
    assert answer == {"syncs": [status_of(node_records)]}
    (entry,) = answer["syncs"]
    live = [r for r in all_records(node_records) if r["_nango_metadata"]["deleted_at"] is None]
    assert entry["connection_id"] == NODE_CONNECTION and entry["name"] == "tasks"
    assert entry["status"] == "SUCCESS"
    assert entry["recordCount"] == {"Task": len(live)}
    everyone = client(node_records)("syncStatus", syncs="*")
    assert {s["connection_id"] for s in everyone["syncs"]} >= {"acme", NODE_CONNECTION}


def test_pause_start_and_update_frequency(node_records: Deployment) -> None:
    nango = client(node_records)
    configured = status_of(node_records)["frequency"]
    paused = nango("pauseSync", syncs=["tasks"], connectionId=NODE_CONNECTION)
    assert paused == {"status": 200, "data": {"success": True}}
    assert status_of(node_records)["status"] == "PAUSED"
    assert status_of(node_records, "acme")["status"] != "PAUSED", "paused another connection"

    started = nango("startSync", syncs=["tasks"], connectionId=NODE_CONNECTION)
    assert started == {"status": 200, "data": {"success": True}}
    after_start = status_of(node_records)
    assert after_start["status"] == "SUCCESS"
    assert after_start["nextScheduledSyncAt"] is not None

    changed = nango(
        "updateSyncConnectionFrequency",
        sync="tasks",
        connectionId=NODE_CONNECTION,
        frequency="every 2h",
    )
    assert changed == {"frequency": "every 2h"}
    assert status_of(node_records)["frequency"] == "every 2h"
    assert status_of(node_records, "acme")["frequency"] == configured

    restored = nango(
        "updateSyncConnectionFrequency", sync="tasks", connectionId=NODE_CONNECTION, frequency=None
    )
    assert restored == {"frequency": configured}
    assert status_of(node_records)["frequency"] == configured

    refused = nango(
        "updateSyncConnectionFrequency", sync="nope", connectionId=NODE_CONNECTION, frequency=None
    )
    assert refused["error"]["status"] == 400
    assert refused["error"]["data"]["error"]["field"] == "sync_name"
    assert "'nope'" in refused["error"]["data"]["error"]["message"]


def test_trigger_sync_incremental_reset_and_emptied_cache(node_records: Deployment) -> None:
    nango, receiver = client(node_records), node_records.receiver

    mark = receiver.mark()
    answer = nango("triggerSync", syncs=["tasks"], connectionId=NODE_CONNECTION)
    assert answer == {"status": 200, "data": {"success": True}}
    receiver.wait_for(of(NODE_CONNECTION, "INCREMENTAL"), timeout=60, after=mark)

    # reset: a full run saves every task again; a deleted one comes back as added.
    deleted = [r["id"] for r in all_records(node_records) if r["_nango_metadata"]["deleted_at"]]
    assert deleted, "the fixture deleted T-3; a reset must have something to restore"
    mark = receiver.mark()
    answer = nango(
        "triggerSync", syncs=["tasks"], connectionId=NODE_CONNECTION, opts={"reset": True}
    )
    assert answer["status"] == 200
    full = receiver.wait_for(of(NODE_CONNECTION, "INITIAL"), timeout=60, after=mark)
    assert full.body["responseResults"] == {"added": len(deleted), "updated": 0, "deleted": 0}
    restored = all_records(node_records)
    assert all(r["_nango_metadata"]["deleted_at"] is None for r in restored)
    first_seen = {r["id"]: r["_nango_metadata"]["first_seen_at"] for r in restored}

    # emptyCache: the records are dropped, then the full run adds every one again.
    mark = receiver.mark()
    answer = nango(
        "triggerSync",
        syncs=["tasks"],
        connectionId=NODE_CONNECTION,
        opts={"reset": True, "emptyCache": True},
    )
    assert answer["status"] == 200
    refill = receiver.wait_for(of(NODE_CONNECTION, "INITIAL"), timeout=60, after=mark)
    assert refill.body["responseResults"] == {"added": len(restored), "updated": 0, "deleted": 0}
    refilled = {r["id"]: r["_nango_metadata"]["first_seen_at"] for r in all_records(node_records)}
    assert sorted(refilled) == sorted(first_seen)
    assert all(refilled[key] > first_seen[key] for key in refilled), (first_seen, refilled)

    # The legacy form, triggerSync(key, syncs, id, true): Nango's "full_refresh" sync_mode,
    # a full run that finds every record as it is (nothing added, updated or deleted).
    mark = receiver.mark()
    answer = nango("triggerSync", syncs=["tasks"], connectionId=NODE_CONNECTION, opts=True)
    assert answer["status"] == 200
    legacy = receiver.wait_for(of(NODE_CONNECTION, "INITIAL"), timeout=60, after=mark)
    assert legacy.body["responseResults"] == {"added": 0, "updated": 0, "deleted": 0}

    refused = nango("triggerSync", syncs=["nope"], connectionId=NODE_CONNECTION)
    assert refused["error"]["status"] == 400 and "'nope'" in json.dumps(refused)


# -- connections -------------------------------------------------------------------------


def test_connections_list_search_get_metadata_and_delete(connected: Deployment) -> None:
    nango = client(connected)
    suffix = secrets.token_hex(3)
    first, second = f"node-meta-{suffix}-1", f"node-meta-{suffix}-2"
    for connection_id in (first, second):
        create_connection(connected, connection_id, f"ws_{connection_id}")
    try:
        listed = nango("listConnections")
        reference = api(connected, "GET", "/connections").json()
        assert listed == reference
        assert {first, second, "acme"} <= {c["connection_id"] for c in listed["connections"]}

        found = nango("listConnections", search=f"META-{suffix}")
        assert sorted(c["connection_id"] for c in found["connections"]) == [first, second]
        one = nango("listConnections", connectionId="acme")
        assert [c["connection_id"] for c in one["connections"]] == ["acme"]

        got = nango("getConnection", connectionId=first)
        reference = api(connected, "GET", f"/connections/{first}?provider_config_key={KEY}")
        assert got == reference.json()
        assert got["metadata"] == {"workspace_id": f"ws_{first}"}
        assert got["credentials"] == {"type": "API_KEY"}, "a secret field was returned"

        replaced = nango("setMetadata", connectionId=first, metadata={"plan": "pro"})
        assert replaced["status"] == 200
        assert _metadata(connected, first) == {"plan": "pro"}
        merged = nango("updateMetadata", connectionId=[first, second], metadata={"seats": 3})
        assert merged["status"] == 200
        assert _metadata(connected, first) == {"plan": "pro", "seats": 3}
        assert _metadata(connected, second) == {"workspace_id": f"ws_{second}", "seats": 3}

        deleted = nango("deleteConnection", connectionId=first)
        assert deleted["status"] in (200, 204)
        gone = api(connected, "GET", f"/connections/{first}?provider_config_key={KEY}")
        assert gone.status_code == 404, gone.text
        missing = nango("getConnection", connectionId=first)
        assert missing["error"]["status"] == 404
        assert first in missing["error"]["data"]["error"]["message"]
        assert _metadata(connected, second)["seats"] == 3, "deleted the wrong connection"
    finally:
        for connection_id in (first, second):
            api(connected, "DELETE", f"/connections/{connection_id}?provider_config_key={KEY}")


def _metadata(deployment: Deployment, connection_id: str) -> dict[str, Any]:
    response = api(deployment, "GET", f"/connections/{connection_id}?provider_config_key={KEY}")
    assert response.status_code == 200, response.text
    metadata: dict[str, Any] = response.json()["metadata"]
    return metadata


# -- scripts config ----------------------------------------------------------------------


def test_scripts_config_is_the_api_s(connected: Deployment) -> None:
    answer = client(connected)("getScriptsConfig")
    reference = api(connected, "GET", "/scripts/config", params={"format": "nango"})
    assert answer == reference.json()
    (integration,) = answer
    assert integration["providerConfigKey"] == KEY
    (sync,) = integration["syncs"]
    assert sync["name"] == "tasks" and sync["returns"] == ["Task"]
    assert sync["runs"] == status_of(connected, "acme")["frequency"]
    assert sync["webhookSubscriptions"] == ["task.created", "task.updated", "task.deleted"]
    assert [model["name"] for model in sync["models"]] == ["Task"]


# -- completion webhooks -----------------------------------------------------------------


def test_the_completion_webhook_verifies_only_untampered(connected: Deployment) -> None:
    notification = connected.receiver.received[-1]
    hmac_header = notification.headers["x-nango-hmac-sha256"]
    body = notification.raw.decode()
    answer = client(connected)(
        "verifyIncomingWebhookRequest",
        deliveries=[{"body": body, "hmac": hmac_header}, {"body": body + " ", "hmac": hmac_header}],
        keys=[connected.signing_key, "another-key"],
    )
    assert answer == {"verified": [[True, False], [False, False]]}


def test_verify_incoming_webhook_request_during_a_signing_key_rotation(
    make_env: Callable[..., dict[str, str]], database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/deployment.md §7: with ``old,new`` the Nango header is signed with the old key,
    with ``new,old`` with the new one; a client holding that key verifies the delivery, a
    client holding only the other does not. Each step delivers through the real outbox."""
    for name, value in TASKTRACKER_ENV.items():  # what the bundled nango.yaml reads
        monkeypatch.setenv(name, value)
    old, new = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    receiver = AppReceiver(old)
    server = ServerThread(receiver.app).start()
    try:
        deliveries = [
            _deliver_one(make_env, database_url, server.url, keys, step, receiver)
            for step, keys in enumerate(((old, new), (new, old)))
        ]
    finally:
        server.stop()
    for item in deliveries:  # Standard Webhooks: every active key signs each delivery
        for key in (old, new):
            secret = "whsec_" + base64.b64encode(key.encode()).decode()
            Webhook(secret).verify(item.raw, item.headers)
    answer = call(
        "http://127.0.0.1:9",  # the client needs a host; verifying calls nothing
        "unused-api-key",
        "unused",
        "verifyIncomingWebhookRequest",
        deliveries=[
            {"body": item.raw.decode(), "hmac": item.headers["x-nango-hmac-sha256"]}
            for item in deliveries
        ],
        keys=[old, new],
    )
    assert answer == {"verified": [[True, False], [False, True]]}


def _deliver_one(
    make_env: Callable[..., dict[str, str]],
    database_url: str,
    url: str,
    keys: tuple[str, str],
    step: int,
    receiver: AppReceiver,
) -> Received:
    """One completion webhook delivered by processes configured with ``keys`` (a restart
    with a new HOOKSYNC_WEBHOOK_SIGNING_KEY is a new settings object)."""
    ctx = AppContext(
        load_settings(
            make_env(
                HOOKSYNC_DATABASE_URL=database_url,
                HOOKSYNC_APP_WEBHOOK_URLS=f"{url}/hooks/hooksync",
                HOOKSYNC_WEBHOOK_SIGNING_KEY=",".join(keys),
            )
        )
    )
    try:
        connection_pk = add_connection(ctx, KEY, f"rotation-{step}", schedules=True)
        run_id = trigger_run(ctx, connection_pk, "tasks")
        with session_scope(ctx.sessions) as session:
            run = session.get(SyncRun, run_id)
            assert run is not None
            results = {"Task": {"added": 1, "updated": 0, "deleted": 0}}
            (notification_id,) = record_completion(session, ctx.settings, run, results)
        deliver(ctx, notification_id)
    finally:
        ctx.close()
    item = receiver.next(timeout=10)
    assert item is not None, "the notification was not delivered"
    return item


def test_every_notification_verifies_with_standard_webhooks(
    connected: Deployment,
) -> None:
    secret = "whsec_" + base64.b64encode(connected.signing_key.encode()).decode()
    received = connected.receiver.received
    assert received
    for item in received:
        Webhook(secret).verify(item.raw, item.headers)  # raises when a signature is wrong
    # Exactly once per message: a retry after a refused attempt keeps its webhook-id (as
    # Standard Webhooks requires), so only the accepted deliveries must be unique.
    ids = [item.headers["webhook-id"] for item in received if 200 <= item.answered < 300]
    assert len(set(ids)) == len(ids)
