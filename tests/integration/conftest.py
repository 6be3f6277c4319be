"""Fixtures of the integration tier (the shared ones are in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from cache.context import AppContext
from ingress.app import create_app
from tests.support.api import Api
from tests.support.tasktracker import TASKTRACKER_ENV


@pytest.fixture
def api() -> Iterator[Api]:
    """A scripted provider API on 127.0.0.1 (``api.reply(path, ...)``), closed afterwards."""
    server = Api()
    yield server
    server.close()


@pytest.fixture
def provider_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment the integrations' nango.yaml reads, set for this test: the example
    task tracker's (``TASKTRACKER_ENV``). A test file whose nango.yaml reads other
    variables, or needs other values, overrides this fixture on top of it."""
    for name, value in TASKTRACKER_ENV.items():
        monkeypatch.setenv(name, value)
    return dict(TASKTRACKER_ENV)


@pytest.fixture
def client(ctx: AppContext, provider_env: dict[str, str]) -> FlaskClient:
    """A test client of the app exactly as ``create_app`` builds it, on ``ctx``.

    ``provider_env`` is set first: ``create_app`` loads ``ctx.integrations``.
    """
    return create_app(ctx).test_client()
