"""Finding the processes a test started, to prove that none outlives it."""

from __future__ import annotations

from pathlib import Path

import psutil


def processes_using(var_dir: Path) -> list[psutil.Process]:
    """Every process running with ``HOOKSYNC_VAR_DIR=var_dir`` (hooksync's processes and
    their children inherit it), those this user may not inspect left out."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get("HOOKSYNC_VAR_DIR") == str(var_dir):
                found.append(process)
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return found
