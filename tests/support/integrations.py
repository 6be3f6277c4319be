"""An integrations folder for a test: its ``nango.yaml`` and a script for every sync."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import yaml

from tests.support.paths import REPO

#: A sync script that does nothing, for tests about everything around the script.
NOOP_SCRIPT = (
    "def fetch_data(nango):\n    pass\n\n\n"
    "def on_webhook_payload_received(nango, payload):\n    pass\n"
)


def write_integrations(folder: Path, nango_yaml: str, script: str = NOOP_SCRIPT) -> Path:
    """Write ``nango_yaml`` into ``folder`` and ``script`` as each sync it declares.

    The scripts go to ``<integration>/syncs/<sync>.py``, where the loader looks for them.

    Returns:
        ``folder``, for ``HOOKSYNC_INTEGRATIONS_DIR``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nango.yaml").write_text(nango_yaml)
    integrations = (yaml.safe_load(nango_yaml) or {}).get("integrations") or {}
    for key, body in integrations.items():
        for name in (body or {}).get("syncs") or {}:
            path = folder / key / "syncs" / f"{name}.py"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(script)
    return folder


def copy_example_integrations(folder: Path, *, runs: str) -> Path:
    """Copy the bundled example (``integrations/``) to ``folder``, every sync polling at
    ``runs`` (a nango.yaml frequency, e.g. ``"every 1 day"``) instead of its own; nothing
    else changes.

    Returns:
        ``folder``, for ``HOOKSYNC_INTEGRATIONS_DIR``.
    """
    shutil.copytree(REPO / "integrations", folder)
    path = folder / "nango.yaml"
    text, replaced = re.subn(r"^(\s+runs:).*$", rf"\1 {runs}", path.read_text(), flags=re.M)
    assert replaced, f"no `runs:` line in {path}"
    path.write_text(text)
    return folder
