"""The log formatters and the log context (config/logs.py): pure, no handler but a string."""

from __future__ import annotations

import io
import json
import logging
import sys
import threading

import pytest

from config.logs import (
    ContextFilter,
    JsonFormatter,
    TextFormatter,
    bind,
    configure_logging,
    current_context,
    log_context,
    make_formatter,
    unbind,
)


def _record(
    message: str = "run %s: success",
    *args: object,
    level: int = logging.INFO,
    extra: dict[str, object] | None = None,
    exc_info: object = None,
) -> logging.LogRecord:
    record = logging.getLogger("workers.execution").makeRecord(
        "workers.execution",
        level,
        __file__,
        1,
        message,
        args or (7,),
        exc_info,  # type: ignore[arg-type]
        extra=extra,
    )
    ContextFilter().filter(record)  # what the handler does, in the thread that logs
    return record


def test_a_json_line_has_the_fixed_keys_and_the_bound_ids() -> None:
    with log_context(event_id="e1", run_id=7, connection_id="acme"):
        record = _record()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    data = json.loads(line)
    assert data["level"] == "INFO"
    assert data["logger"] == "workers.execution"
    assert data["message"] == "run 7: success"
    assert data["ts"].endswith("Z") and data["ts"][10] == "T"
    assert (data["event_id"], data["run_id"], data["connection_id"]) == ("e1", 7, "acme")


def test_extra_fields_come_out_and_win_over_the_context() -> None:
    with log_context(run_id=1, integration="github"):
        record = _record(extra={"run_id": 2, "records": {"Task": {"added": 1}}})
    data = json.loads(JsonFormatter().format(record))
    assert data["run_id"] == 2
    assert data["integration"] == "github"
    assert data["records"] == {"Task": {"added": 1}}


def test_celery_data_extra_is_not_copied() -> None:
    record = _record(extra={"data": {"args": "('secret',)"}})
    assert "data" not in json.loads(JsonFormatter().format(record))


def test_a_traceback_stays_inside_the_one_json_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record = _record(level=logging.ERROR, exc_info=sys.exc_info())
    line = JsonFormatter().format(record)
    assert len(line.splitlines()) == 1
    assert "RuntimeError: boom" in json.loads(line)["exc"]


def test_a_value_json_cannot_hold_still_logs() -> None:
    record = _record(extra={"when": object()})
    assert "object object" in json.loads(JsonFormatter().format(record))["when"]


def test_the_text_line_carries_the_ids_as_key_value_pairs() -> None:
    with log_context(event_id="e1", sync="issues"):
        record = _record(extra={"url": "https://app/hook", "note": "two words"})
    line = TextFormatter().format(record)
    assert line.endswith(
        "INFO workers.execution: run 7: success event_id=e1 sync=issues "
        'url=https://app/hook note="two words"'
    )


def test_the_context_nests_and_unwinds() -> None:
    assert dict(current_context()) == {}
    with log_context(event_id="e1", run_id=None):
        with log_context(run_id=3):
            assert dict(current_context()) == {"event_id": "e1", "run_id": 3}
        assert dict(current_context()) == {"event_id": "e1"}
    token = bind(notification_id=9)
    assert current_context()["notification_id"] == 9
    unbind(token)
    assert dict(current_context()) == {}


def test_another_thread_does_not_see_this_threads_ids() -> None:
    seen: list[dict[str, object]] = []
    with log_context(event_id="mine"):
        thread = threading.Thread(target=lambda: seen.append(dict(current_context())))
        thread.start()
        thread.join()
    assert seen == [{}]


def test_configure_logging_replaces_only_its_own_handler() -> None:
    root = logging.getLogger()
    other = logging.NullHandler()
    root.addHandler(other)
    level = root.level
    try:
        first, second = io.StringIO(), io.StringIO()
        configure_logging("json", "INFO", stream=first)
        handler = configure_logging("json", "INFO", stream=second)
        with log_context(event_id="e9"):
            logging.getLogger("hooksync.test").info("hello")
        assert first.getvalue() == ""
        assert json.loads(second.getvalue())["event_id"] == "e9"
        assert other in root.handlers
    finally:
        root.removeHandler(handler)
        root.removeHandler(other)
        root.setLevel(level)


def test_an_unknown_format_is_refused() -> None:
    assert isinstance(make_formatter("json"), JsonFormatter)
    with pytest.raises(ValueError, match="got 'xml'"):
        make_formatter("xml")
