"""The `hooksync` command as an operator runs it: real subprocesses, real files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.integrations import write_integrations
from tests.support.paths import REPO

NANGO_YAML = """
integrations:
  crm:
    syncs:
      contacts:
        runs: every hour
        output: Contact
        webhook-subscriptions: ["*"]
      deals:
        runs: every day
        output: Deal
models:
  Contact: {id: string}
  Deal: {id: string}
"""


def hooksync(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HOOKSYNC_")}
    environ.update({"HOOKSYNC_VAR_DIR": str(tmp_path / "var"), **env})
    return subprocess.run(
        [sys.executable, "-m", "hooksync.cli", *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_json_prints_the_parsed_configuration(tmp_path: Path) -> None:
    folder = write_integrations(tmp_path / "integrations", NANGO_YAML)
    result = hooksync(tmp_path, "check", "--json", HOOKSYNC_INTEGRATIONS_DIR=str(folder))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["errors"] == []
    assert report["integrations"]["crm"]["syncs"]["contacts"] == {
        "runs": "every hour",
        "interval_seconds": 3600,
        "sync_type": "full",
        "track_deletes": False,
        "auto_start": True,
        "webhook_subscriptions": ["*"],
        "output": ["Contact"],
    }


def test_check_reports_scripts_that_lack_what_their_sync_needs(tmp_path: Path) -> None:
    folder = write_integrations(tmp_path / "integrations", NANGO_YAML)
    # contacts subscribes to webhooks but has no handler; deals has no fetch_data at all.
    (folder / "crm" / "syncs" / "contacts.py").write_text("def fetch_data(nango):\n    pass\n")
    (folder / "crm" / "syncs" / "deals.py").write_text("X = 1\n")
    result = hooksync(tmp_path, "check", "--json", HOOKSYNC_INTEGRATIONS_DIR=str(folder))
    assert result.returncode == 1
    errors = json.loads(result.stdout)["errors"]
    assert {(e["code"], e["path"]) for e in errors} == {
        ("script_invalid", "integrations.crm.syncs.contacts"),
        ("script_invalid", "integrations.crm.syncs.deals"),
    }
    messages = " ".join(e["message"] for e in errors)
    assert "on_webhook_payload_received" in messages and "fetch_data" in messages


def test_check_reports_a_missing_script(tmp_path: Path) -> None:
    folder = write_integrations(tmp_path / "integrations", NANGO_YAML)
    (folder / "crm" / "syncs" / "deals.py").unlink()
    result = hooksync(tmp_path, "check", HOOKSYNC_INTEGRATIONS_DIR=str(folder))
    assert result.returncode == 1
    assert "error: integrations.crm.syncs.deals" in result.stdout


def test_web_refuses_an_unmigrated_database_in_one_line(tmp_path: Path) -> None:
    folder = write_integrations(tmp_path / "integrations", NANGO_YAML)
    result = hooksync(tmp_path, "web", HOOKSYNC_INTEGRATIONS_DIR=str(folder))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "run the release step first" in lines[0]


def test_a_bad_variable_stops_any_command_in_one_line(tmp_path: Path) -> None:
    result = hooksync(tmp_path, "migrate", HOOKSYNC_NOTIFY_EMPTY="perhaps")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "hooksync: HOOKSYNC_NOTIFY_EMPTY must be true or false, got 'perhaps'"
    )
