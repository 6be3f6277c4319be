"""`make demo` as a newcomer sees it: the live flow within seconds, a clean Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.paths import REPO
from tests.support.processes import processes_using
from tests.support.servers import free_port

pytestmark = pytest.mark.e2e


def test_demo_shows_the_live_flow_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    var_dir = tmp_path / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKSYNC_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "demo.run", "--port", str(free_port()), "--var-dir", str(var_dir)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    started = time.monotonic()
    try:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip())
            if "app notified" in line and "WEBHOOK" in line:
                break
            assert time.monotonic() - started < 90, "\n".join(lines)
        else:
            pytest.fail("demo ended early:\n" + "\n".join(lines))
        seconds_to_first_webhook = time.monotonic() - started
        output = "\n".join(lines)
        assert "hooksync is up" in output
        assert "INITIAL Task: 3 added" in output
        assert "answered 202" in output
        assert "ms after the webhook" in output
        assert seconds_to_first_webhook < 60, output

        process.send_signal(signal.SIGINT)  # what Ctrl-C sends
        rest, _ = process.communicate(timeout=60)
        output += "\n" + rest
        assert process.returncode == 0, output
        assert "nothing left running" in output
        assert processes_using(var_dir.resolve()) == []
    finally:
        if process.poll() is None:
            process.kill()
        for leftover in processes_using(var_dir.resolve()):
            leftover.kill()
