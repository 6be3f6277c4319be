"""`hooksync dryrun`: the example's fetch_data against the demo's task tracker, over HTTP,
printing what it would save and writing nothing (every table compared before and after)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from cache.context import AppContext
from cache.models import Base
from cache.store import RecordStore
from demo.fake_tracker import FakeTracker
from demo.http_thread import ServerThread
from hooksync.cli import main
from tests.support.rows import add_connection


@pytest.fixture
def tracker(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTracker]:
    """The demo's tracker on loopback with three tasks; nango.yaml's variables point at it."""
    fake = FakeTracker(
        api_token=secrets.token_urlsafe(16), webhook_secret="whs", workspace_id="ws_acme"
    )
    for title in ("Write the launch post", "Fix login redirect", "Plan Q3 roadmap"):
        fake.create_task(title, notify=False)
    server = ServerThread(fake.app).start()
    monkeypatch.setenv("TASKTRACKER_BASE_URL", server.url)
    monkeypatch.setenv("TASKTRACKER_WEBHOOK_SECRET", fake.webhook_secret)
    yield fake
    server.stop()


@pytest.fixture
def cli_env(ctx: AppContext, make_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command reads the same settings as ``ctx`` (database, var dir, keys)."""
    for name, value in make_env(HOOKSYNC_DATABASE_URL=ctx.settings.database_url).items():
        monkeypatch.setenv(name, value)


def snapshot(ctx: AppContext) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in a stable order."""
    with ctx.engine.connect() as conn:
        return {
            table.name: sorted(map(tuple, conn.execute(select(table)).all()), key=repr)
            for table in Base.metadata.sorted_tables
        }


def as_task(raw: dict[str, Any], **changes: Any) -> dict[str, Any]:
    task = {key: raw[key] for key in ("id", "title", "status", "updated_at")}
    return {**task, "assignee": raw.get("assignee"), **changes}


def test_dryrun_prints_what_fetch_data_would_save_and_writes_nothing(
    ctx: AppContext,
    tracker: FakeTracker,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pk = add_connection(
        ctx,
        "tasktracker",
        "acme",
        {"workspace_id": "ws_acme"},
        credentials={"type": "API_KEY", "api_key": tracker.api_token},
        schedules=True,
    )
    # T-1 cached as the tracker has it, T-2 cached with an older title, T-3 not cached.
    RecordStore(ctx.sessions, cursor_key="k").save(
        pk,
        "Task",
        [as_task(tracker.get_task("T-1")), as_task(tracker.get_task("T-2"), title="Old")],
    )
    before = snapshot(ctx)
    assert before["records"] and before["schedules"] and before["model_seqs"]

    assert main(["dryrun", "tasktracker", "tasks", "acme"]) == 0
    text = capsys.readouterr().out
    assert "dry run of tasktracker/tasks for connection 'acme': INITIAL" in text
    assert "Task: 3 record(s): 1 new, 1 changed, 1 unchanged" in text
    rows = {line.split()[1]: line.split()[0] for line in text.splitlines() if " T-" in line}
    assert rows == {"T-1": "unchanged", "T-2": "changed", "T-3": "new"}
    assert '"title":"Plan Q3 roadmap"' in text

    assert main(["dryrun", "tasktracker", "tasks", "acme", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    task_plan = report["models"]["Task"]
    assert [(r["action"], r["id"]) for r in task_plan["records"]] == [
        ("unchanged", "T-1"),
        ("changed", "T-2"),
        ("new", "T-3"),
    ]
    assert task_plan["records"][1]["record"]["title"] == "Fix login redirect"
    assert report["written"] is False

    assert snapshot(ctx) == before
    assert tracker.requests_seen.count("GET /tasks") == 2  # it did call the real API


def test_dryrun_failures_are_one_line_without_the_credentials(
    ctx: AppContext,
    tracker: FakeTracker,
    cli_env: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wrong_token = "not-the-tracker-token-" + secrets.token_hex(4)
    add_connection(
        ctx,
        "tasktracker",
        "acme",
        {"workspace_id": "ws_acme"},
        credentials={"type": "API_KEY", "api_key": wrong_token},
        schedules=True,
    )
    before = snapshot(ctx)

    assert main(["dryrun", "tasktracker", "tasks", "acme"]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1, captured.err
    assert captured.err.startswith("hooksync dryrun: fetch_data failed (external_api_error)")
    assert "401" in captured.err
    assert wrong_token not in captured.err + captured.out

    assert main(["dryrun", "tasktracker", "tasks", "nobody"]) == 2
    assert capsys.readouterr().err == (
        "hooksync dryrun: connection_id: connection 'nobody' not found in integration "
        "'tasktracker'\n"
    )
    assert main(["dryrun", "tasktracker", "nosuch", "acme"]) == 2
    assert "has no sync 'nosuch' (its syncs: tasks)" in capsys.readouterr().err
    assert snapshot(ctx) == before
