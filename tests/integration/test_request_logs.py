"""The web's log lines (ingress/logs.py): request ids, the receiver's event id, the access
line's fields — and no header or query string in any of them."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import re
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from flask.testing import FlaskClient
from gunicorn.config import Config

from config.logs import ContextFilter, JsonFormatter, current_context
from ingress.logs import ENVIRON_KEY, GunicornLogger
from tests.support.tasktracker import TASKTRACKER_ENV

#: What a caller might send that must never reach a log.
LEAK = "Bearer do-not-log-me"


@pytest.fixture
def json_lines() -> Iterator[io.StringIO]:
    """Every record of the test, as the JSON lines a process would write."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def test_a_request_id_is_echoed_or_made(client: FlaskClient) -> None:
    given = client.get("/healthz", headers={"X-Request-Id": "req-42.a"})
    assert given.headers["X-Request-Id"] == "req-42.a"
    # Spaces (or anything else than a plain token) would forge fields in text logs.
    made = client.get("/healthz", headers={"X-Request-Id": 'x" event_id="forged'})
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-Id"])
    assert dict(current_context()) == {}  # nothing of a request outlives it


def test_the_receiver_logs_the_event_id_and_no_header(
    client: FlaskClient, json_lines: io.StringIO
) -> None:
    body = json.dumps({"event": "task.updated", "task_id": "T-1", "workspace_id": "w"}).encode()
    secret = TASKTRACKER_ENV["TASKTRACKER_WEBHOOK_SECRET"].encode()
    signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    response = client.post(
        "/webhook/tasktracker?token=do-not-log-me",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Tracker-Event": "task.updated",
            "X-Tracker-Delivery": "d-1",
            "X-Tracker-Signature": signature,
            "Authorization": LEAK,
        },
    )
    assert response.status_code == 202, response.text
    assert response.json is not None
    event_id = response.json["id"]

    lines = [json.loads(text) for text in json_lines.getvalue().splitlines()]
    [received] = [line for line in lines if line["message"].startswith("webhook received")]
    assert received["event_id"] == event_id
    assert received["integration"] == "tasktracker"
    assert received["request_id"] == response.headers["X-Request-Id"]
    assert "do-not-log-me" not in json_lines.getvalue()
    assert signature not in json_lines.getvalue()
    assert dict(current_context()) == {}


def test_the_access_line_has_the_ids_and_neither_query_nor_headers() -> None:
    config = Config()
    config.set("accesslog", "-")
    level = logging.getLogger().level
    logger = GunicornLogger(config)
    stream = io.StringIO()
    capture = logging.StreamHandler(stream)
    capture.setFormatter(JsonFormatter())
    logger.access_log.addHandler(capture)
    try:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/webhook/tasktracker",
            "QUERY_STRING": "token=do-not-log-me",
            "RAW_URI": "/webhook/tasktracker?token=do-not-log-me",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_AUTHORIZATION": LEAK,
            "REMOTE_ADDR": "127.0.0.1",
            ENVIRON_KEY: {"request_id": "r1", "event_id": "e1", "integration": "tasktracker"},
        }
        response = SimpleNamespace(status="202 ACCEPTED", status_code=202)
        logger.access(response, SimpleNamespace(), environ, timedelta(milliseconds=3.25))
    finally:
        logger.access_log.removeHandler(capture)
        _remove_root_handler(level)

    [text] = stream.getvalue().splitlines()
    line = json.loads(text)
    assert line["logger"] == "gunicorn.access"
    assert line["message"] == "POST /webhook/tasktracker 202"
    assert (line["method"], line["path"], line["status"]) == ("POST", "/webhook/tasktracker", 202)
    ids = (line["request_id"], line["event_id"], line["integration"])
    assert ids == ("r1", "e1", "tasktracker")
    assert line["duration_ms"] == pytest.approx(3.25, abs=0.1)
    assert "do-not-log-me" not in text


def _remove_root_handler(level: int) -> None:
    # GunicornLogger.setup installed the process's stderr handler on the root logger.
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "hooksync"]:
        root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)
