"""`hooksync check` on a folder written as Nango's integration templates are: the key is
``${PWD}``, a model field is an inline array of objects, a value has a tab after it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.test_cli import hooksync
from tests.support.integrations import NOOP_SCRIPT

NANGO_YAML = (
    "integrations:\n"
    "  ${PWD}:\n"
    "    syncs:\n"
    "      contacts:\n"
    "        runs: every hour\t\n"
    "        sync_type: incremental\t# what changed since the last run\n"
    "        track_deletes: true\t\t# comment\n"
    "        output: Contact\n"
    "        webhook-subscriptions: [contact.updated]\n"
    "models:\n"
    "  Contact:\n"
    "    id: string\n"
    "    tags?: [{id: string, label?: string}]\n"
)


def test_check_reads_a_pwd_folder_as_nango_does(tmp_path: Path) -> None:
    folder = tmp_path / "hubspot"
    script = folder / "hubspot" / "syncs" / "contacts.py"
    script.parent.mkdir(parents=True)
    script.write_text(NOOP_SCRIPT)
    (folder / "nango.yaml").write_text(NANGO_YAML)

    result = hooksync(tmp_path, "check", "--json", HOOKSYNC_INTEGRATIONS_DIR=str(folder))

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["errors"] == []
    assert report["integrations"] == {
        "hubspot": {
            "syncs": {
                "contacts": {
                    "runs": "every hour",
                    "interval_seconds": 3600,
                    "sync_type": "incremental",
                    "track_deletes": True,
                    "auto_start": True,
                    "webhook_subscriptions": ["contact.updated"],
                    "output": ["Contact"],
                }
            }
        }
    }
