"""The official clients of our contracts, run against a live deployment: the Nango Node
client (records API, completion-webhook verification) and the Python standardwebhooks
package (the Standard Webhooks headers of every notification)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook

from tests.support.deployment import Deployment
from tests.support.servers import skip_or_fail

pytestmark = pytest.mark.e2e

NODE_DIR = Path(__file__).resolve().parent / "node"


def test_nango_node_client_pages_records_and_verifies_the_completion_webhook(
    connected: Deployment,
) -> None:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@nangohq" / "node").exists():
        skip_or_fail("node or @nangohq/node is not installed (make test installs it with npm)")
    notification = connected.receiver.received[-1]
    result = subprocess.run(
        [node, str(NODE_DIR / "contract.mjs")],
        env={
            **os.environ,
            "HOOKSYNC_URL": connected.url,
            "API_KEY": connected.api_key,
            "SIGNING_KEY": connected.signing_key,
            "WEBHOOK_BODY": notification.raw.decode(),
            "WEBHOOK_HMAC": notification.headers["x-nango-hmac-sha256"],
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    output = json.loads(result.stdout)
    seen = [record["id"] for page in output["pages"] for record in page]
    assert sorted(seen) == sorted(r["id"] for r in connected.records(limit=100)["records"])
    assert len(seen) == len(set(seen)), "a record was returned twice while paging"
    assert all(len(page) <= 2 for page in output["pages"])
    assert output["verified"] is True
    assert output["tampered"] is False
    assert output["unauthorized"] == 401


def test_every_notification_verifies_with_standard_webhooks(
    connected: Deployment,
) -> None:
    import base64

    secret = "whsec_" + base64.b64encode(connected.signing_key.encode()).decode()
    received = connected.receiver.received
    assert received
    for item in received:
        Webhook(secret).verify(item.raw, item.headers)  # raises when a signature is wrong
    # Exactly once per message: a retry after a refused attempt keeps its webhook-id (as
    # Standard Webhooks requires), so only the accepted deliveries must be unique.
    ids = [item.headers["webhook-id"] for item in received if 200 <= item.answered < 300]
    assert len(set(ids)) == len(ids)
