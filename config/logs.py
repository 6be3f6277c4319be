"""Structured logs: one event per line, text or JSON, each carrying its webhook's ids.

Every process (gunicorn's workers, the Celery worker and beat, the ``hooksync`` command)
logs through ``configure_logging``: one handler on the root logger with one of the two
formatters below, fed by ``ContextFilter``. The edges of the system bind what they know
with ``log_context`` (the receiver the event id, the drain the event and its run, an
execution its run, connection, integration and sync, a delivery its notification), and
every line logged inside carries those ids as fields. So ``grep <event id>`` over every
process's log follows one webhook from the receiver to the app (ARCHITECTURE.md §13).

The formatters are pure (a ``LogRecord`` in, one line out); the context is a
``contextvars.ContextVar``, so a thread or an asyncio task sees only its own ids.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, TextIO

__all__ = [
    "CONTEXT_FIELDS",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "ContextFilter",
    "JsonFormatter",
    "TextFormatter",
    "bind",
    "configure_logging",
    "current_context",
    "fields_of",
    "log_context",
    "make_formatter",
    "unbind",
]

#: The ids a line can carry, in the order the text format prints them.
CONTEXT_FIELDS = (
    "request_id",
    "event_id",
    "integration",
    "connection_id",
    "sync",
    "run_id",
    "notification_id",
)

#: ``HOOKSYNC_LOG_FORMAT`` values.
LOG_FORMATS = ("text", "json")

#: ``HOOKSYNC_LOG_LEVEL`` values.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

#: Attributes every ``LogRecord`` has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

#: ``extra=`` keys never copied into a line. Celery passes its message's format arguments
#: again as ``data`` (the task's argument reprs, its return value): the message already
#: says what matters, and argument reprs are not ours to publish field by field.
_IGNORED_EXTRAS = frozenset({"data"})

_EMPTY: Mapping[str, Any] = MappingProxyType({})

_context: ContextVar[Mapping[str, Any]] = ContextVar("hooksync_log_context", default=_EMPTY)

#: Marks the handler ``configure_logging`` installed, so calling it again replaces only it.
_HANDLER_NAME = "hooksync"


def current_context() -> Mapping[str, Any]:
    """The ids bound in this thread or task right now (read-only)."""
    return _context.get()


def bind(**fields: Any) -> Token[Mapping[str, Any]]:
    """Add ``fields`` to the current context until ``unbind`` with the returned token.

    None values are skipped, so a caller can pass what it may not know.
    """
    merged = {**_context.get(), **{k: v for k, v in fields.items() if v is not None}}
    return _context.set(MappingProxyType(merged))


def unbind(token: Token[Mapping[str, Any]]) -> None:
    """Restore the context as it was before the ``bind`` that returned ``token``."""
    _context.reset(token)


@contextmanager
def log_context(**fields: Any) -> Iterator[Mapping[str, Any]]:
    """Every line logged inside the block carries ``fields`` (None values skipped)."""
    token = bind(**fields)
    try:
        yield _context.get()
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    """Copies the bound ids onto each record that passes, unless the call gave its own.

    On the handler, not on a logger: records of every logger reach it, and the copy
    happens in the thread that logged, where the context is the right one.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if name not in record.__dict__:
                setattr(record, name, value)
        return True


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The ids and ``extra=`` fields of ``record``: context ids first, in their order."""
    extras = {
        name: value
        for name, value in record.__dict__.items()
        if name not in _RECORD_ATTRIBUTES
        and name not in _IGNORED_EXTRAS
        and not name.startswith("_")
    }
    ordered = {name: extras.pop(name) for name in CONTEXT_FIELDS if name in extras}
    return {**ordered, **extras}


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.fromtimestamp(record.created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, ``pid``, then
    the ids and extra fields, and ``exc`` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        for name, value in fields_of(record).items():
            line.setdefault(name, value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra value JSON cannot hold (a datetime, an enum) still logs.
        return json.dumps(line, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """``<ts> <LEVEL> <logger>: <message> key=value ...``; a traceback follows on its lines."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{_timestamp(record)} {record.levelname} {record.name}: {record.getMessage()}"
        fields = " ".join(
            f"{name}={_text_value(value)}" for name, value in fields_of(record).items()
        )
        if fields:
            text = f"{text} {fields}"
        if record.exc_info:
            text = f"{text}\n{self.formatException(record.exc_info)}"
        elif record.exc_text:
            text = f"{text}\n{record.exc_text}"
        if record.stack_info:
            text = f"{text}\n{self.formatStack(record.stack_info)}"
        return text


def _text_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    # Quoted when a space would make the key=value pairs ambiguous.
    return json.dumps(text) if (" " in text or not text) else text


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter for ``HOOKSYNC_LOG_FORMAT`` (``text`` or ``json``).

    Raises:
        ValueError: Another format name (settings validate it before this is reached).
    """
    if log_format == "json":
        return JsonFormatter()
    if log_format == "text":
        return TextFormatter()
    raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is at each record, not as it was at set-up.

    Whoever swaps ``sys.stderr`` (a test runner capturing a command's output, a daemon
    redirecting it) would otherwise leave the handler writing to a closed file.
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr  # emit runs under the handler's lock (Handler.handle)
        super().emit(record)


def configure_logging(
    log_format: str, level: str, *, stream: TextIO | None = None
) -> logging.Handler:
    """Send every logger's records to ``stream`` (stderr) in ``log_format``, from ``level``.

    Replaces the handler an earlier call installed and leaves other handlers alone (a
    test runner's capture, for one). Warnings are logged too (``py.warnings``).

    Returns:
        The installed handler, for callers that must format other loggers the same way.
    """
    handler = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(make_formatter(log_format))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # Warnings (Celery's "running as root", a library's deprecation) become log lines in
    # the same format instead of bare text on stderr.
    logging.captureWarnings(True)
    return handler
