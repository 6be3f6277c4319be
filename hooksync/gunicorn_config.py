"""gunicorn's configuration for ``hooksync web``: ``--config python:hooksync.gunicorn_config``.

gunicorn reads every top-level name of this module as a setting (unknown ones are
ignored): it holds the server hooks and the limits on slow clients, which an operator may
change with ``GUNICORN_CMD_ARGS`` (that wins over this file; ``hooksync web``'s own command
line wins over both). What each limit bounds: ``ingress/gunicorn_worker.py``.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any

from prometheus_client import multiprocess

__all__ = [
    "child_exit",
    "forwarded_allow_ips",
    "keepalive",
    "worker_class",
    "worker_connections",
]

#: gevent: a slow client holds one greenlet, not a worker process (issue 9); gunicorn's own
#: error pages (a bad header, 414) as the API's JSON errors. Here rather than on the command
#: line so that ``GUNICORN_CMD_ARGS="--worker-class ingress.gunicorn_worker.JsonErrorWorker"``
#: can bring back the sync worker (behind a buffering proxy; bench/slow_clients.py compares).
worker_class = "ingress.gunicorn_worker.JsonErrorGeventWorker"

#: Connections one web worker process serves at once (one greenlet each, ~ a few kB); past
#: it gunicorn stops accepting and the kernel's backlog holds the rest. gunicorn's default.
worker_connections = 1000

#: Seconds a new connection has to send its first request line and headers. A provider sends
#: its headers in one write; a socket trickling them is closed after this. (Must stay above
#: 0: at 0 gunicorn reads the headers unbounded.) A connection that was answered then waits
#: for its next request up to ``ingress.gunicorn_worker.KEPT_ALIVE_IDLE_SECONDS`` (75 s).
keepalive = 5


def _trusted_proxies() -> str:
    # HOOKSYNC_TRUSTED_PROXIES is validated by `hooksync web` before it execs gunicorn.
    parts = os.environ.get("HOOKSYNC_TRUSTED_PROXIES", "").split(",")
    return ",".join(str(ipaddress.ip_network(p.strip(), strict=False)) for p in parts if p.strip())


#: gunicorn itself sets a request's scheme from ``X-Forwarded-Proto`` for these addresses
#: (its default: 127.0.0.1 and ::1, whoever they are). The same proxies as ``ingress.proxy``
#: trusts for the ``X-Forwarded-*`` headers, and nobody when none is configured, so a local
#: client cannot make a request look ``https``.
forwarded_allow_ips = _trusted_proxies()


def child_exit(server: Any, worker: Any) -> None:
    """A web worker exited: hand back its live-gauge files (prometheus_client's protocol).

    Its counter and histogram files stay, so the machine's totals do not drop when gunicorn
    replaces a worker.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
