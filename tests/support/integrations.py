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


def extend_example_integrations(
    folder: Path, *, syncs: str, models: str, provider: str, scripts: dict[str, str]
) -> Path:
    """Copy the bundled example (``integrations/``) to ``folder`` and add one integration
    to its ``nango.yaml``: ``syncs`` goes before ``models:``, ``models`` before
    ``providers:``, ``provider`` at the end; ``scripts`` maps ``<integration>/syncs/<name>.py``
    (relative to ``folder``) to the text written there.

    Returns:
        ``folder``, for ``HOOKSYNC_INTEGRATIONS_DIR``.
    """
    shutil.copytree(REPO / "integrations", folder)
    text = (folder / "nango.yaml").read_text()
    text = text.replace("\nmodels:\n", "\n" + syncs.strip("\n") + "\n\nmodels:\n", 1)
    text = text.replace("\nproviders:\n", "\n" + models.strip("\n") + "\n\nproviders:\n", 1)
    text = text.rstrip("\n") + "\n" + provider.strip("\n") + "\n"
    (folder / "nango.yaml").write_text(text)
    for relative, script in scripts.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(script)
    return folder
