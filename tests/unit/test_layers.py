"""The import contracts of ``.importlinter`` hold (the layers and no cycle inside a package).

``make lint`` runs the same contracts; this keeps them in ``make test`` too, so a change that
imports upwards, or closes a cycle, fails the suite and names the import.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_import_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout
