"""Fixtures of the integration tier (the shared ones are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.api import Api


@pytest.fixture
def api() -> Iterator[Api]:
    """A scripted provider API on 127.0.0.1 (``api.reply(path, ...)``), closed afterwards."""
    server = Api()
    yield server
    server.close()
