"""Slow clients (issue 9): sockets trickling bytes do not delay anyone else's webhook.

A real ``hooksync web`` (gunicorn, its gevent worker class, 2 workers, the embedded Redis,
SQLite) on the bench integration, driven by ``bench.slow_clients``'s helpers: 200 slow
sockets (half trickling their headers, half their body, one byte a second, reopened when
the server closes them) stay open while signed webhooks are sent one after the other. Also
the limits that keep such sockets from being held forever (``ingress/gunicorn_worker.py``),
and that each greenlet logs with its own request's ids.
"""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.e2e_load import WEBHOOK_PATH, build_webhook, post_webhook
from bench.slow_clients import SlowSockets, bench_web, port_of, send_webhooks
from demo.stack import Stack

#: A web's start (migrations, gunicorn, two workers) takes ~40 s on a busy 2-core machine.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

#: The issue's figures: slow sockets open, webhooks sent among them, their p99 bound.
SLOW_SOCKETS = 200
WEBHOOKS = 120
P99_LIMIT_MS = 50.0

#: Measurements of the slow phase at most: a latency figure on a shared machine can catch
#: someone else's burst (the sync worker misses the bound by seconds, not milliseconds).
ATTEMPTS = 2

#: hooksync/gunicorn_config.py's ``keepalive``: seconds allowed for a request's headers.
HEADER_SECONDS = 5
#: The request deadline the second server runs with (``GUNICORN_CMD_ARGS``), in seconds.
SHORT_TIMEOUT = 3


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    secret = secrets.token_hex(16)
    with bench_web(tmp_path_factory.mktemp("slow"), secret, log_format="json") as stack:
        yield stack, secret


def test_webhooks_answered_at_once_while_200_slow_sockets_are_open(
    web: tuple[Stack, str],
) -> None:
    stack, secret = web
    port = port_of(stack)
    send_webhooks(port, secret, count=10)  # warm-up: each worker's imports and connections
    floor = send_webhooks(port, secret, count=WEBHOOKS // 2, timeout=10)  # for the message

    with SlowSockets(port, SLOW_SOCKETS) as slow:
        time.sleep(2)  # every slow socket has sent its first bytes and is held by the server
        for _attempt in range(ATTEMPTS):
            result = send_webhooks(port, secret, count=WEBHOOKS, seconds=30, timeout=10)
            if result.ms(0.99) <= P99_LIMIT_MS:
                break
        still_open = slow.open_now

    assert still_open == SLOW_SOCKETS
    figures = f"with {SLOW_SOCKETS} slow sockets: {result.summary()}; without: {floor.summary()}"
    assert result.statuses == [202] * WEBHOOKS, figures
    assert result.ms(0.99) <= P99_LIMIT_MS, figures

    # The slow sockets are gone: the server answers as before, no worker was killed.
    stack.wait_healthy(10)
    assert send_webhooks(port, secret, count=5, timeout=10).statuses == [202] * 5
    assert "WORKER TIMEOUT" not in stack.tail("web", 100_000)


def test_headers_not_complete_within_keepalive_seconds_close_the_connection(
    web: tuple[Stack, str],
) -> None:
    stack, _secret = web
    request = f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nX-Padding: {'p' * 200}\r\n"
    with socket.create_connection(("127.0.0.1", port_of(stack)), timeout=1) as sock:
        started = time.monotonic()
        closed_after = None
        for byte in request.encode():
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1024) == b"":
                    closed_after = time.monotonic() - started
                    break
            except TimeoutError:
                continue  # nothing to read yet: the server still waits for the headers
            except OSError:
                closed_after = time.monotonic() - started
                break
            if time.monotonic() - started > HEADER_SECONDS + 10:
                break
    assert closed_after is not None, "the server kept a socket trickling its headers"
    assert HEADER_SECONDS - 1 <= closed_after <= HEADER_SECONDS + 3, closed_after


def test_a_kept_alive_connection_idle_longer_than_keepalive_is_still_answered(
    web: tuple[Stack, str],
) -> None:
    # A provider's pooled client (or a proxy) sends its next webhook on a connection that sat
    # idle: the server must not have closed it after the 5 s allowed for a first request's
    # headers, or that webhook gets a reset instead of an answer.
    stack, secret = web
    connection = http.client.HTTPConnection("127.0.0.1", port_of(stack), timeout=10)
    try:
        first = post_webhook(connection, *build_webhook(secret.encode(), "acct-001", "idle-1", 1))
        time.sleep(HEADER_SECONDS + 3)
        second = post_webhook(connection, *build_webhook(secret.encode(), "acct-001", "idle-2", 2))
    finally:
        connection.close()
    assert (first[1], second[1]) == (202, 202)


def test_a_body_not_complete_within_timeout_closes_only_its_connection(
    tmp_path: Path,
) -> None:
    secret = secrets.token_hex(16)
    args = f"--timeout {SHORT_TIMEOUT}"
    with bench_web(tmp_path, secret, gunicorn_args=args, log_format="json") as stack:
        port = port_of(stack)
        body, headers = build_webhook(secret.encode(), "acct-001", "slow-body", 1)
        with _open_request(port, body, headers) as sock:
            sock.sendall(body[:10])  # and nothing more
            sock.settimeout(SHORT_TIMEOUT + 5)
            started = time.monotonic()
            # Meanwhile the others are answered as usual.
            assert send_webhooks(port, secret, count=5, timeout=10).statuses == [202] * 5
            answer = sock.recv(1024)
            closed_after = time.monotonic() - started

        assert answer == b""  # closed without an answer: the response may have begun
        assert closed_after <= SHORT_TIMEOUT + 2, closed_after
        [line] = [line for line in _web_lines(stack) if line["message"].startswith("request POST")]
        assert line["level"] == "WARNING"
        assert f"not complete after {SHORT_TIMEOUT} s" in line["message"]
        stack.wait_healthy(10)
        assert "WORKER TIMEOUT" not in stack.tail("web", 100_000)


def test_each_request_logs_its_own_ids_while_others_interleave(web: tuple[Stack, str]) -> None:
    """Requests wait in their body reads at once and finish in the order they started: each
    greenlet has its own log context (config/logs.py's ContextVar). With one context shared
    by a process's greenlets, the first of two in one worker would log the second's id (4
    requests over 2 workers: at least one worker has two)."""
    stack, secret = web
    port = port_of(stack)
    nonce = secrets.token_hex(4)
    ids = [f"ctx-{nonce}-{n}" for n in range(4)]
    bodies = []
    sockets = []
    try:
        for request_id in ids:
            body, headers = build_webhook(secret.encode(), "acct-001", request_id, 1)
            sock = _open_request(port, body, {**headers, "X-Request-Id": request_id})
            sock.sendall(body[:10])
            bodies.append(body)
            sockets.append(sock)
            time.sleep(0.3)  # it is in the app, its request id bound, reading its body
        answers = []
        for sock, body in zip(sockets, bodies, strict=True):
            sock.sendall(body[10:])
            answers.append(_read_answer(sock))
    finally:
        for sock in sockets:
            sock.close()

    event_ids = []
    for answer in answers:
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 202"), answer
        event_ids.append(json.loads(payload)["id"])
    received = {
        line["event_id"]: line.get("request_id")
        for line in _wait_for_lines(stack, event_ids)
        if line["message"].startswith("webhook received")
    }
    assert received == dict(zip(event_ids, ids, strict=True))


def _open_request(port: int, body: bytes, headers: dict[str, str]) -> socket.socket:
    """A connection that has sent a webhook's request line and headers, not its body."""
    head = [f"POST {WEBHOOK_PATH} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    return sock


def _read_answer(sock: socket.socket) -> bytes:
    """One whole HTTP answer with a ``Content-Length`` body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"closed before the answer's headers: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, "closed in the middle of the answer's body"
        body += chunk
    return head + b"\r\n\r\n" + body


def _web_lines(stack: Stack) -> list[dict[str, Any]]:
    lines = []
    for text in (stack.log_dir / "web.log").read_text(errors="replace").splitlines():
        try:
            line = json.loads(text)
        except ValueError:
            continue  # a line written before logging was configured
        if isinstance(line, dict) and "message" in line:
            lines.append(line)
    return lines


def _wait_for_lines(stack: Stack, event_ids: list[str]) -> list[dict[str, Any]]:
    """The web's lines naming any of ``event_ids``, once each has its receiver line."""
    deadline = time.monotonic() + 10
    while True:
        found = [line for line in _web_lines(stack) if line.get("event_id") in event_ids]
        named = {line["event_id"] for line in found if line["message"].startswith("webhook rec")}
        if named == set(event_ids) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)
