"""The folder the processes of one machine share their Prometheus metrics through.

prometheus_client's multiprocess mode: every process that counts something writes it to
memory-mapped files named after its pid (``counter_<pid>.db``, ``histogram_<pid>.db``) in
``PROMETHEUS_MULTIPROC_DIR``, and ``/metrics`` (``ingress/metrics.py``) merges them all. The
variable must be set before a process imports prometheus_client, so the ``hooksync``
command sets it (``prepare_metrics_dir``) before it execs gunicorn or Celery, whose
children inherit it. Default: ``<HOOKSYNC_VAR_DIR>/metrics``; a variable the operator set
is kept.

prometheus_client's documentation asks for the folder to be wiped before start-up. Here
web and worker processes start independently and share it, so a start removes only the
files of processes that are no longer alive: a live process's file must stay, or its
counts would vanish from the scrape while it keeps writing to the unlinked file. Removing a
dead process's counts makes the machine's totals drop, which Prometheus treats as a
counter reset, as after any restart (``rate()`` and ``increase()`` handle it).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["MULTIPROC_ENV", "prepare_metrics_dir", "remove_dead_files"]

log = logging.getLogger(__name__)

#: prometheus_client's variable (``workers.metrics.MULTIPROC_ENV``), spelled out here so the
#: command imports neither Celery nor prometheus_client before ``check_imports`` can name
#: a missing one as an installation problem.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_metrics_dir(var_dir: Path) -> Path:
    """Create the metrics folder, drop dead processes' files, export the variable.

    Args:
        var_dir: ``HOOKSYNC_VAR_DIR``; the folder is ``var_dir / "metrics"`` unless
            ``PROMETHEUS_MULTIPROC_DIR`` is set already.

    Returns:
        The folder, now in ``os.environ`` for the process about to be exec'd.
    """
    folder = Path(os.environ.get(MULTIPROC_ENV) or var_dir / "metrics")
    # Owner-only: the processes' metric files are created with the default umask (0644).
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    remove_dead_files(folder)
    os.environ[MULTIPROC_ENV] = str(folder)
    return folder


def remove_dead_files(folder: Path) -> list[Path]:
    """Delete the ``*_<pid>.db`` files whose process is gone; returns what was deleted."""
    removed = []
    for path in folder.glob("*.db"):
        _, _, pid = path.stem.rpartition("_")
        if not pid.isdigit() or _is_alive(int(pid)):
            continue
        path.unlink(missing_ok=True)  # another process starting now may have been first
        removed.append(path)
    if removed:
        log.debug("metrics: removed %d file(s) of dead processes in %s", len(removed), folder)
    return removed


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True
