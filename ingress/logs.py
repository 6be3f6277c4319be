"""The web's logs: gunicorn's error and access logs in hooksync's format, and each request's ids.

``hooksync web`` starts gunicorn with ``--logger-class ingress.logs.GunicornLogger``: the
master and every worker then log through ``config.logs.configure_logging`` (the root
logger: the app's own lines) and gunicorn's two loggers get the same formatter, so all of
the web's output is one format, ``HOOKSYNC_LOG_FORMAT``.

Each request gets a request id (the caller's ``X-Request-Id`` when it is a sane token,
else a new one, echoed in the response) bound into the log context for the lines the
request logs. The access line is written by gunicorn after the response, outside that
context: what it should carry (the request id, and the event id the receiver made) is
left in the WSGI environ under ``ENVIRON_KEY`` by ``note``.
"""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

from flask import Flask, Response, g, request
from gunicorn import glogging

from config.logs import ContextFilter, bind, configure_logging, make_formatter, unbind
from config.settings import load_log_options

__all__ = ["ENVIRON_KEY", "GunicornLogger", "init_app", "note"]

#: The WSGI environ key holding the ids the access line carries.
ENVIRON_KEY = "hooksync.log_fields"

#: A caller's ``X-Request-Id`` is kept only when it looks like an id: it goes into every
#: line of the request, so it must not smuggle spaces, quotes or a whole payload in.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def init_app(app: Flask) -> None:
    """Bind a request id around every request and return it as ``X-Request-Id``."""
    app.before_request(_bind_request)
    app.after_request(_echo_request_id)
    app.teardown_request(_unbind_request)


def note(**fields: Any) -> None:
    """Add ``fields`` to this request's log context and to its access line.

    For a view that learns an id while it runs (the receiver: the event id it made).
    """
    token = bind(**fields)
    g.setdefault("hooksync_log_tokens", []).append(token)
    request.environ.setdefault(ENVIRON_KEY, {}).update(
        {name: value for name, value in fields.items() if value is not None}
    )


def _bind_request() -> None:
    given = request.headers.get("X-Request-Id", "")
    request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    note(request_id=request_id)


def _echo_request_id(response: Response) -> Response:
    request_id = request.environ.get(ENVIRON_KEY, {}).get("request_id")
    if request_id:
        response.headers["X-Request-Id"] = request_id
    return response


def _unbind_request(_error: BaseException | None) -> None:
    # Newest first: each token restores the context its bind found. Gunicorn's sync
    # workers serve requests one after the other on one thread, so a request's ids must
    # not outlive it.
    for token in reversed(g.pop("hooksync_log_tokens", [])):
        unbind(token)


class GunicornLogger(glogging.Logger):  # type: ignore[misc]
    """Gunicorn's logger, writing hooksync's format: one line per event, with the ids."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        log_format, level = load_log_options()
        # The app's own loggers propagate to the root; gunicorn's two do not (they have
        # handlers of their own), so both get the same formatter and context filter.
        configure_logging(log_format, level)
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                handler.setFormatter(make_formatter(log_format))
                handler.addFilter(ContextFilter())

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: timedelta) -> None:
        """One line per request: method, path (never the query string, which may hold a
        token), status, duration, and the request's ids. No header is logged."""
        if not self.access_log_enabled:
            return
        status = resp.status_code if getattr(resp, "status_code", None) else resp.status
        method, path = environ.get("REQUEST_METHOD", "-"), environ.get("PATH_INFO", "-")
        fields = {
            "method": method,
            "path": path,
            "status": status,
            "duration_ms": round(request_time.total_seconds() * 1000, 1),
            "remote_addr": environ.get("REMOTE_ADDR", "-"),
            **environ.get(ENVIRON_KEY, {}),
        }
        try:
            self.access_log.info("%s %s %s", method, path, status, extra=fields)
        except Exception:
            self.error_log.exception("could not write the access log line")
