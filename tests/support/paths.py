"""Where things are in the repository, for tests that read its files or run its commands."""

from __future__ import annotations

from pathlib import Path

#: The repository's root folder (the working directory of the commands tests run).
REPO = Path(__file__).resolve().parents[2]
