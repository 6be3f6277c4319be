"""gunicorn's configuration for ``hooksync web``: ``--config python:hooksync.gunicorn_config``.

gunicorn reads every top-level name of this module as a setting (unknown ones are
ignored), so it holds only server hooks; the command line gives the rest.
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import multiprocess

__all__ = ["child_exit"]


def child_exit(server: Any, worker: Any) -> None:
    """A web worker exited: hand back its live-gauge files (prometheus_client's protocol).

    Its counter and histogram files stay, so the machine's totals do not drop when gunicorn
    replaces a worker.
    """
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
