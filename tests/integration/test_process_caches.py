"""What a long-lived worker keeps between executions, and when it lets go of it: the parsed
``nango.yaml``, the imported scripts and the decrypted credentials (real Redis, SQLite and
Postgres; executions go through the inbox drain, as webhooks do)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from cache import context as context_module
from cache.context import AppContext
from cache.credentials import encrypt_credentials
from cache.db import session_scope
from cache.models import Connection, Record
from config.settings import load_settings
from ingress.webhooks import build_event
from tests.support.integrations import write_integrations
from tests.support.rows import insert_connection
from workers import inbox
from workers.drain import drain_inbox

NANGO_YAML = """
integrations:
  tracker:
    syncs:
      items:
        runs: every 1h
        output: Item
        webhook-subscriptions: "*"
models:
  Item:
    id: string
providers:
  tracker:
    base_url: http://127.0.0.1:9
    auth: {type: bearer}
    webhook:
      signature: {scheme: none}
      connection: {path: account, match: connection_id}
      delivery_id: {header: x-delivery}
"""

#: Saves what the execution saw: the script's version and the connection's token.
SCRIPT = """
VERSION = {version}

def fetch_data(nango):
    pass

def on_webhook_payload_received(nango, payload):
    token = nango.get_connection()["credentials"]["access_token"]
    nango.batch_save([{{"id": payload["id"], "version": VERSION, "token": token}}], "Item")
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_integrations(tmp_path / "integrations", NANGO_YAML, SCRIPT.format(version=1))


@pytest.fixture
def ctx(make_env: Any, database_url: str, folder: Path) -> Iterator[AppContext]:
    env = make_env(HOOKSYNC_DATABASE_URL=database_url, HOOKSYNC_INTEGRATIONS_DIR=str(folder))
    context = AppContext(load_settings(env))
    with session_scope(context.sessions) as session:
        insert_connection(
            session,
            "tracker",
            "acme",
            credentials_encrypted=encrypt_credentials(
                context.settings.encryption_key, {"type": "OAUTH2", "access_token": "token-1"}
            ),
        )
    yield context
    context.close()


def run_webhook(ctx: AppContext, record_id: str) -> dict[str, Any]:
    """One webhook through the inbox; the record its execution saved."""
    body = json.dumps({"account": "acme", "id": record_id}).encode()
    event = build_event(
        "tracker",
        method="POST",
        url="http://localhost/webhook/tracker",
        headers=[("Content-Type", "application/json"), ("X-Delivery", record_id)],
        raw=body,
    )
    inbox.push(ctx.redis, event)
    assert drain_inbox(ctx, "worker-1") == 1
    with session_scope(ctx.sessions) as session:
        payload = session.scalar(select(Record.payload).where(Record.external_id == record_id))
    assert payload is not None, f"webhook {record_id} saved nothing"
    return dict(json.loads(payload))


def touch_later(path: Path) -> None:
    """Move the file's modification time forward (same-second edits keep the size too)."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


def test_an_edited_script_is_used_by_the_next_execution(ctx: AppContext, folder: Path) -> None:
    assert run_webhook(ctx, "r1")["version"] == 1
    assert run_webhook(ctx, "r2")["version"] == 1  # imported once, reused
    script = folder / "tracker" / "syncs" / "items.py"
    script.write_text(SCRIPT.format(version=2))
    touch_later(script)
    assert run_webhook(ctx, "r3")["version"] == 2


def test_new_credentials_are_used_by_the_next_execution(ctx: AppContext) -> None:
    assert run_webhook(ctx, "r1")["token"] == "token-1"
    with session_scope(ctx.sessions) as session:
        session.execute(
            update(Connection).values(
                credentials_encrypted=encrypt_credentials(
                    ctx.settings.encryption_key, {"type": "OAUTH2", "access_token": "token-2"}
                )
            )
        )
    assert run_webhook(ctx, "r2")["token"] == "token-2"


def test_an_edited_nango_yaml_is_reloaded_after_the_recheck_interval(
    ctx: AppContext, folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ctx.integrations
    assert ctx.integrations is first  # parsed once
    assert set(first.by_key["tracker"].syncs) == {"items"}
    nango_yaml = folder / "nango.yaml"
    edited = NANGO_YAML.replace("      items:\n", "      more:\n        runs: every 2h\n"
                                "        output: Item\n      items:\n")  # fmt: skip
    nango_yaml.write_text(edited)
    (folder / "tracker" / "syncs" / "more.py").write_text(SCRIPT.format(version=1))
    touch_later(nango_yaml)
    assert ctx.integrations is first  # within the interval nothing is even checked
    monkeypatch.setattr(context_module, "INTEGRATIONS_RECHECK_SECONDS", 0.0)
    time.sleep(0.01)
    assert set(ctx.integrations.by_key["tracker"].syncs) == {"items", "more"}
    reloaded = ctx.integrations
    assert ctx.integrations is reloaded  # unchanged file: not parsed again
