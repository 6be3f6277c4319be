"""The ``nango`` object's rules (ARCHITECTURE.md §4), against an in-memory fake store: no I/O."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from cache.merge import MergeStrategy, Operation
from cache.store import BatchResult, PendingWrite
from config.errors import BadInputError, ConfigError, RetriableError
from config.integrations import ProviderConfig
from workers.execution import classify_error
from workers.external import (
    ExternalAPIError,
    ExternalAPIUnavailable,
    ExternalClient,
    redact,
    secret_values,
)
from workers.runtime import ConnectionInfo, NangoRuntime, ScriptUsageError, StoreLike


class FakeStore(StoreLike):
    """The record store in memory, as the runtime sees it (``StoreLike``, which
    ``cache.store.RecordStore`` implements): mypy checks each method against it."""

    def __init__(self, seq: int = 0) -> None:
        self.seq = seq
        self.calls: list[tuple[str, str, list[Any], MergeStrategy, int | None]] = []
        #: What the next writes return, in order (then: every record added).
        self.results: list[BatchResult] = []
        self.windows: dict[int, str] = {}
        self.closed: list[tuple[int, bool]] = []
        self.block: threading.Event | None = None
        self.entered = threading.Event()

    def _write(self, op: str, pk: int, model: str, records: list[Any], **kw: Any) -> BatchResult:
        self.calls.append((op, model, records, kw["strategy"], kw["cursor_seq"]))
        if self.block is not None:
            self.entered.set()
            self.block.wait(5)
        return self.results.pop(0) if self.results else BatchResult(added=len(records))

    def prepare(
        self,
        operation: Operation,
        connection_pk: int,
        model: str,
        records: Sequence[Any],
        strategy: MergeStrategy,
        cursor_seq: int | None,
        *,
        cursor_key: Any = None,
    ) -> PendingWrite:
        # The fake keeps the raw records where the store keeps validated ones.
        return PendingWrite(
            operation, connection_pk, model, list(records), [], strategy, cursor_seq, cursor_key
        )

    def apply(
        self, writes: Sequence[PendingWrite], *, now: datetime | None = None
    ) -> list[BatchResult]:
        return [
            self._write(
                write.operation.value,
                write.connection_pk,
                write.model,
                write.unique,
                strategy=write.strategy,
                cursor_seq=write.cursor_seq,
            )
            for write in writes
        ]

    def current_seq(self, connection_pk: int, model: str) -> int:
        return self.seq

    def open_tracking(self, run_id: int, connection_pk: int, model: str) -> int:
        window = len(self.windows) + 1
        self.windows[window] = model
        return window

    def close_tracking(self, window_id: int, *, success: bool) -> int:
        self.closed.append((window_id, success))
        return 3 if success else 0


#: What every request of ``FakeClient`` answers.
RESPONSE = requests.Response()


class FakeClient(ExternalClient):
    """The provider's API client without a network: it records the calls it gets. A
    subclass, so mypy checks the overrides against ``ExternalClient``'s signatures."""

    def __init__(self) -> None:  # no session, no credentials: nothing of the real one
        self.requests: list[tuple[str, str]] = []

    def request(self, method: str, endpoint: str, **kw: Any) -> requests.Response:
        self.requests.append((method, endpoint))
        return RESPONSE

    def paginate(
        self, endpoint: str, params: Mapping[str, Any] | None = None, **kw: Any
    ) -> Iterator[list[Any]]:
        self.requests.append(("PAGINATE", endpoint))
        yield [{"id": 1}]

    def close(self) -> None:
        pass


def make_runtime(store: FakeStore | None = None, **kw: Any) -> tuple[NangoRuntime, FakeStore]:
    store = store or FakeStore()
    client = FakeClient()
    options: dict[str, Any] = {
        "store": store,
        "connection": ConnectionInfo(
            pk=7,
            connection_id="conn-1",
            provider_config_key="tasktracker",
            credentials={"type": "API_KEY", "api_key": "sk-very-secret"},
            metadata={"workspace_id": "w1"},
        ),
        "provider": ProviderConfig(key="tasktracker", base_url="https://api.example"),
        "run_id": 1,
        "sync_name": "tasks",
        "sync_type": "INITIAL",
        "output_models": ("Task",),
        "client_factory": lambda: client,
    }
    options.update(kw)
    return NangoRuntime(**options), store


def test_strategy_after_a_batch_raises_a_clear_error() -> None:
    nango, _store = make_runtime()
    nango.batch_save([{"id": "1"}], "Task")
    with pytest.raises(ScriptUsageError, match="call it first"):
        nango.set_merging_strategy({"strategy": "ignore_if_modified_after"}, "Task")


def test_strategy_after_an_api_call_raises() -> None:
    nango, _store = make_runtime()
    assert nango.get("/tasks/1") is RESPONSE
    with pytest.raises(ScriptUsageError, match="after a batch operation or an API call"):
        nango.set_merging_strategy("override", "Task")


def test_strategy_after_paginate_raises_even_before_the_first_page() -> None:
    nango, _store = make_runtime()
    pages = nango.paginate("/tasks")
    assert next(pages) == [{"id": 1}]
    with pytest.raises(ScriptUsageError):
        nango.set_merging_strategy("override", "Other")


def test_strategy_after_an_empty_batch_still_raises() -> None:
    nango, store = make_runtime()
    nango.batch_save([], "Task")
    assert store.calls == []
    with pytest.raises(ScriptUsageError):
        nango.set_merging_strategy("override", "Task")


def test_second_strategy_for_a_model_is_ignored_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nango, store = make_runtime()
    nango.set_merging_strategy({"strategy": "newest_wins", "field": "updated_at"}, "Task")
    with caplog.at_level(logging.WARNING, logger="workers.runtime"):
        nango.set_merging_strategy({"strategy": "override"}, "Task")
    assert "ignored" in caplog.text and "newest_wins" in caplog.text
    nango.batch_save([{"id": "1"}], "Task")
    assert store.calls[0][3] == MergeStrategy("newest_wins", "updated_at")
    assert store.calls[0][4] is None  # only ignore_if_modified_after carries a cursor


def test_strategies_are_per_model() -> None:
    nango, store = make_runtime()
    nango.set_merging_strategy("ignore_if_modified_after", "Task")
    nango.set_merging_strategy({"strategy": "override"}, "Comment")
    nango.batch_save([{"id": "1"}], "Comment")
    nango.batch_save([{"id": "1"}], "Other")
    assert [call[3].name for call in store.calls] == ["override", "override"]


def test_ignore_if_modified_after_cursor_starts_at_current_seq_and_follows_own_writes() -> None:
    nango, store = make_runtime(FakeStore(seq=5))
    nango.set_merging_strategy({"strategy": "ignore_if_modified_after"}, "Task")
    store.seq = 50  # later writes by others must not move the cursor
    store.results = [BatchResult(added=2, max_seq=9), BatchResult(), BatchResult(max_seq=7)]
    nango.batch_save([{"id": "1"}, {"id": "2"}], "Task")
    nango.batch_update([{"id": "1"}], "Task")
    nango.batch_delete([{"id": "2"}], "Task")
    nango.batch_save([{"id": "3"}], "Task")
    assert [call[4] for call in store.calls] == [5, 9, 9, 9]
    assert all(call[3].name == "ignore_if_modified_after" for call in store.calls)


def test_unknown_strategy_is_bad_input() -> None:
    nango, _store = make_runtime()
    with pytest.raises(BadInputError, match="unknown"):
        nango.set_merging_strategy({"strategy": "latest"}, "Task")


def test_batches_from_two_threads_at_once_raise() -> None:
    store = FakeStore()
    store.block = threading.Event()
    nango, _ = make_runtime(store)
    errors: list[BaseException] = []

    def first() -> None:
        try:
            nango.batch_save([{"id": "1"}], "Task")
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    thread = threading.Thread(target=first)
    thread.start()
    assert store.entered.wait(5)
    try:
        with pytest.raises(ScriptUsageError, match="another thread"):
            nango.batch_save([{"id": "2"}], "Task")
    finally:
        store.block.set()
        thread.join(5)
    assert errors == []
    # Once the first batch is done, the next one goes through.
    nango.batch_save([{"id": "3"}], "Task")
    assert len(store.calls) == 2


def test_batches_hold_the_connection_lock() -> None:
    held: list[int] = []
    events: list[str] = []

    class Lock:
        def __init__(self, pk: int) -> None:
            held.append(pk)

        def __enter__(self) -> None:
            events.append("acquire")

        def __exit__(self, *exc: object) -> None:
            events.append("release")

    # Typed as NangoRuntime's ``lock`` argument, so mypy checks the fake against it.
    lock: Callable[[int], AbstractContextManager[None]] = Lock
    store = FakeStore()
    nango, _ = make_runtime(store, lock=lock)
    nango.batch_save([{"id": "1"}], "Task")
    assert held == [7] and events == ["acquire", "release"]


def test_counts_accumulate_per_model_and_include_declared_outputs() -> None:
    nango, store = make_runtime()
    assert nango.results == {"Task": {"added": 0, "updated": 0, "deleted": 0}}
    store.results = [BatchResult(added=2, updated=1), BatchResult(deleted=1), BatchResult(added=1)]
    nango.batch_save([{"id": "1"}, {"id": "2"}, {"id": "3"}], "Task")
    nango.batch_delete([{"id": "1"}], "Task")
    nango.batch_save([{"id": "x"}], "Extra")
    assert nango.results == {
        "Task": {"added": 2, "updated": 1, "deleted": 1},
        "Extra": {"added": 1, "updated": 0, "deleted": 0},
    }


@pytest.mark.parametrize(
    ("records", "model", "match"),
    [
        ({"id": "1"}, "Task", "list of records"),
        ([{"id": "1"}], "", "model name"),
        ([{"id": "1"}], None, "model name"),
    ],
)
def test_bad_batch_arguments_are_bad_input(records: Any, model: Any, match: str) -> None:
    nango, store = make_runtime()
    with pytest.raises(BadInputError, match=match):
        nango.batch_save(records, model)
    assert store.calls == []


def test_track_deletes_windows() -> None:
    nango, store = make_runtime()
    nango.track_deletes_start("Task")
    nango.track_deletes_start("Task")  # ignored: already open
    assert store.windows == {1: "Task"}
    assert nango.track_deletes_end("Task") == 3
    assert nango.results["Task"]["deleted"] == 3
    with pytest.raises(ScriptUsageError, match="without track_deletes_start"):
        nango.track_deletes_end("Task")
    nango.track_deletes_start("Task")
    nango.track_deletes_start("Other")
    nango.close_tracking(success=False)
    assert store.closed == [(1, True), (2, False), (3, False)]
    assert nango.results["Task"]["deleted"] == 3


def test_identity_metadata_and_connection() -> None:
    saved: list[dict[str, Any]] = []
    last = datetime(2024, 1, 2, tzinfo=UTC)
    nango, _ = make_runtime(
        save_metadata=saved.append, sync_type="INCREMENTAL", last_sync_date=last
    )
    assert (nango.connection_id, nango.provider_config_key) == ("conn-1", "tasktracker")
    assert (nango.sync_type, nango.last_sync_date) == ("INCREMENTAL", last)
    connection = nango.get_connection()
    assert connection["credentials"]["api_key"] == "sk-very-secret"
    assert connection["metadata"] == {"workspace_id": "w1"}
    nango.update_metadata({"cursor": "abc"})
    assert saved == [{"workspace_id": "w1", "cursor": "abc"}]
    nango.set_metadata({"only": 1})
    assert nango.get_metadata() == {"only": 1} and saved[-1] == {"only": 1}
    with pytest.raises(BadInputError):
        nango.set_metadata(["not", "a", "dict"])  # type: ignore[arg-type]
    assert "sk-very-secret" not in repr(nango._connection)


def test_unknown_sync_type_is_refused() -> None:
    with pytest.raises(ValueError, match="sync_type"):
        make_runtime(sync_type="FULL")


def test_script_log_is_attributed(caplog: pytest.LogCaptureFixture) -> None:
    nango, _ = make_runtime()
    with caplog.at_level(logging.DEBUG, logger="hooksync.script"):
        nango.log("fetched", 3, "tasks", level="warn")
    record = caplog.records[-1]
    assert record.levelno == logging.WARNING
    assert "[run 1 tasktracker/tasks conn-1] fetched 3 tasks" in record.getMessage()


def test_script_log_masks_the_credentials(caplog: pytest.LogCaptureFixture) -> None:
    nango, _ = make_runtime()
    with caplog.at_level(logging.INFO, logger="hooksync.script"):
        nango.log("connection:", nango.get_connection())
    assert "sk-very-secret" not in caplog.text
    assert "***" in caplog.records[-1].getMessage()


def test_classify_error() -> None:
    assert classify_error(ExternalAPIError("GET /x returned 404: no"))[0] == "external_api_error"
    assert classify_error(ExternalAPIUnavailable("GET /x returned 503"))[0] == "external_api_error"
    assert classify_error(ScriptUsageError("x"))[0] == "script_usage_error"
    assert classify_error(BadInputError("record 3 has no id"))[0] == "invalid_records"
    assert classify_error(ConfigError("gone"))[0] == "config_error"
    assert classify_error(RetriableError("lock"))[0] == "temporary_error"
    kind, message = classify_error(KeyError("task_id"))
    assert (kind, message) == ("script_error", "KeyError: 'task_id'")


def test_classify_error_names_the_script_line(tmp_path: Path) -> None:
    script = tmp_path / "tasks.py"
    script.write_text("def boom():\n    raise ValueError('bad value')\n")
    namespace: dict[str, Any] = {}
    exec(compile(script.read_text(), str(script), "exec"), namespace)
    try:
        namespace["boom"]()
    except ValueError as error:
        _kind, message = classify_error(error, script=script)
    assert message == "ValueError: bad value (at tasks.py:2 in boom)"


def test_redact_masks_every_credential_value() -> None:
    secrets = secret_values(
        {"type": "BASIC", "username": "alice", "password": "hunter2-pass", "api_key": "k"}
    )
    assert secrets == ["hunter2-pass"]  # usernames are not secret; 1-char values are noise
    assert redact("login alice:hunter2-pass failed", secrets) == "login alice:*** failed"
