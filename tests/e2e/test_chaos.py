"""The chaos suite's CI profile (``make chaos-ci``) passes: nothing lost, nothing run twice.

It runs ``python -m bench.chaos`` with ``HOOKSYNC_CHAOS_PROFILE=ci`` as a subprocess — real
gunicorn, Celery workers, beat, Postgres and the embedded Redis, each fault injected once
(bench/chaos/run.py) — and asserts its exit status and its table. Without Postgres binaries
the driver exits 2: skipped on a developer's machine, a failure under ``CI=true``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from demo.stack import REPO
from tests.support.servers import skip_or_fail

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

#: The CI profile takes about 3 to 4 minutes; the rest is margin for a loaded machine.
TIMEOUT_SECONDS = 420


@pytest.mark.timeout(TIMEOUT_SECONDS + 30)
def test_the_ci_chaos_profile_loses_nothing_and_recovers() -> None:
    env = {**os.environ, "HOOKSYNC_CHAOS_PROFILE": "ci", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "bench.chaos"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_SECONDS,
    )
    output = result.stdout + result.stderr
    if result.returncode == 2 and "could not start Postgres" in output:
        skip_or_fail(output.strip().splitlines()[-1])
    print(output)
    assert result.returncode == 0, output[-6000:]
    rows = _table_rows(output)
    for name in (
        "webhooks acked 202 = processed",
        "webhooks run twice (no fault between)",
        "cache = external API (after reconciliation)",
        "notifications delivered = expected",
        "notifications delivered twice (no fault between)",
        "notifications in order per stream",
        "takeover of a dead worker's runs",
        "processes that exited on their own",
    ):
        assert rows.get(name, ("", ""))[1] == "yes", f"{name!r}: {rows.get(name)}\n{output[-6000:]}"
    assert " 0 lost" in rows["webhooks acked 202 = processed"][0]
    for fault in ("kill -9 worker", "kill -9 Redis", "database down", "app refuse/503/429",
                  "external API 429/5xx", "kill -9 web"):  # fmt: skip
        assert fault in rows, f"no line for {fault!r} in the table"
    assert "all checks passed" in output


def _table_rows(output: str) -> dict[str, tuple[str, str]]:
    """The printed tables' rows by first cell: (second cell, last cell)."""
    rows: dict[str, tuple[str, str]] = {}
    for line in output.splitlines():
        if line.startswith("| ") and not line.startswith("|-"):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            rows[cells[0]] = (cells[1], cells[-1])
    return rows
