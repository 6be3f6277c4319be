"""The gunicorn worker classes of ``hooksync web``: gunicorn's own errors answered as JSON,
and a slow client holding only its own connection.

gunicorn refuses some requests before the app sees them (a control character in a header:
400; a request line over ``limit_request_line``: 414; …) and renders those itself, as an
HTML page. Every other error of the API is ``{"error": {"code", "message"}}`` with
``application/json`` (``ingress.errors``), and the OpenAPI document promises that shape for
every status, so ``JsonErrorMixin`` keeps gunicorn's decisions (status, logging, access log)
and only replaces the page it writes. It works over any gunicorn worker class.

``hooksync web`` runs ``JsonErrorGeventWorker`` (issue 9, "slow clients"): gunicorn's gevent
worker serves each connection in its own greenlet, so a socket sending one byte a second
holds one greenlet, not the process, as a sync worker's one request at a time did. What
bounds such sockets (``hooksync/gunicorn_config.py`` sets the figures):

* ``worker_connections`` connections per worker process; past it gunicorn stops accepting
  and new connections wait in the kernel's backlog;
* ``keepalive`` seconds for the request line and headers of a connection's first request
  (gunicorn's gevent worker reads them under ``timeout_ctx()`` and closes the connection
  when it fires); after a request was answered, ``KEPT_ALIVE_IDLE_SECONDS`` (75 s) for the
  next one: ``JsonErrorGeventWorker.timeout_ctx``;
* ``timeout`` seconds for the rest of a request (reading its body, the app, writing the
  answer): ``JsonErrorGeventWorker.handle_request``. Under an async worker gunicorn's own
  ``timeout`` is only the worker's heartbeat (the hub not run for that long), so this
  deadline is what still cuts a client trickling its body.

``JsonErrorWorker`` (the sync worker) stays for comparisons (``bench/slow_clients.py``).
"""

from __future__ import annotations

import json
import re
import socket
import weakref
from typing import Any

import gevent
from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker
from gunicorn.workers.sync import SyncWorker

__all__ = [
    "JsonErrorGeventWorker",
    "JsonErrorMixin",
    "JsonErrorWorker",
    "json_error_response",
]


class JsonErrorMixin:
    """Before a gunicorn worker class: its pre-app error pages are JSON."""

    log: Any

    def handle_error(self, req: Any, client: socket.socket, addr: Any, exc: BaseException) -> None:
        capture = _Capture(client)
        super().handle_error(req, capture, addr, exc)  # type: ignore[misc]
        status, reason = _status_line(capture.data)
        if status is None:
            return  # nothing was written (the client went away): nothing to replace
        try:
            util.write_nonblock(client, json_error_response(status, reason))
        except Exception:  # noqa: BLE001 - as gunicorn: a gone client is not our error
            self.log.debug("Failed to send error message.")


class JsonErrorWorker(JsonErrorMixin, SyncWorker):
    """``gunicorn.workers.sync.SyncWorker`` whose pre-app error pages are JSON."""


#: Seconds a kept-alive connection may sit idle between two requests. Above the idle timeouts
#: of the proxies and load balancers put in front (nginx's upstream keep-alive and AWS ALB:
#: 60 s), as the rule "the server outlives the proxy's idle connection" asks: otherwise the
#: server closes a connection just as the proxy (or a provider's pooled client) sends the
#: next webhook on it, and that webhook gets a reset instead of an answer (the main-path bench
#: saw 7-18 such per phase with the 5 s of ``keepalive``). An idle connection costs a greenlet
#: and a socket; ``worker_connections`` bounds them either way.
KEPT_ALIVE_IDLE_SECONDS = 75.0

#: The greenlets (one per connection) that have answered a request: their connection waits
#: for the next one with ``KEPT_ALIVE_IDLE_SECONDS``, not ``keepalive``.
_answered: weakref.WeakSet[Any] = weakref.WeakSet()


class JsonErrorGeventWorker(JsonErrorMixin, GeventWorker):  # type: ignore[misc]
    """``gunicorn.workers.ggevent.GeventWorker`` whose pre-app error pages are JSON, whose
    requests each get ``timeout`` seconds from their headers to their answer, and whose
    kept-alive connections stay open ``KEPT_ALIVE_IDLE_SECONDS`` between requests."""

    def timeout_ctx(self) -> gevent.Timeout:
        # gunicorn reads every request's line and headers under this: the first of a
        # connection must come within ``keepalive`` (a socket trickling it is cut), the next
        # ones may follow an idle pause as long as a proxy's.
        answered = gevent.getcurrent() in _answered
        return gevent.Timeout(KEPT_ALIVE_IDLE_SECONDS if answered else self.cfg.keepalive, False)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        seconds = self.cfg.timeout if self.cfg.timeout > 0 else None  # 0: gunicorn's "never"
        deadline = gevent.Timeout(seconds)
        deadline.start()
        _answered.add(gevent.getcurrent())
        try:
            return super().handle_request(listener_name, req, sock, addr)
        except gevent.Timeout as exc:
            if exc is not deadline:
                raise  # someone else's timeout (the app's own): not ours to turn into a close
            # Nothing is answered: the response may have begun, and a 4xx/5xx written after
            # it would corrupt it. The client sees the connection closed, as when the sync
            # worker was killed, but only this connection is.
            self.log.warning(
                "request %s %s not complete after %s s (a slow client or a slow answer): "
                "connection closed",
                req.method,
                req.path,
                seconds,
            )
            raise StopIteration from None  # gunicorn's signal to close this connection
        finally:
            deadline.close()


def json_error_response(status: int, reason: str) -> bytes:
    """A complete HTTP/1.1 response with the API's error body, closing the connection.

    The message never repeats the request (it is what could not be parsed).
    """
    code = re.sub(r"[^a-z0-9]+", "_", reason.lower()).strip("_") or "bad_request"
    if status >= 500:
        message = "internal server error; the details are in the server log"
    else:
        message = f"{reason}: the HTTP server could not accept this request"
    body = json.dumps({"error": {"code": code, "message": message}}).encode("utf-8")
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("latin-1") + body


class _Capture:
    """The client socket, except that what gunicorn writes is kept instead of sent."""

    def __init__(self, client: socket.socket) -> None:
        self._client = client
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0  # so ``write_nonblock`` does not toggle blocking mode on us

    def sendall(self, data: bytes) -> None:
        self.data += bytes(data)

    def send(self, data: bytes) -> int:
        self.data += bytes(data)
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _status_line(data: bytes) -> tuple[int | None, str]:
    match = re.match(rb"HTTP/1\.[01] (\d{3}) ([^\r\n]*)\r\n", data)
    if match is None:
        return None, ""
    return int(match.group(1)), match.group(2).decode("latin-1")
