"""An application context on a test's own integrations, as the event and poison tests use."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cache.context import AppContext
from config.settings import load_settings
from tests.support.integrations import write_integrations


@contextmanager
def events_context(
    make_env: Callable[..., dict[str, str]],
    database_url: str,
    folder: Path,
    nango_yaml: str,
    app_url: str,
) -> Iterator[AppContext]:
    """A context on ``nango_yaml`` (written to ``folder``), notifying ``app_url``, with a
    90 s run lease; closed on leaving."""
    write_integrations(folder, nango_yaml)
    env = make_env(
        HOOKSYNC_DATABASE_URL=database_url,
        HOOKSYNC_INTEGRATIONS_DIR=str(folder),
        HOOKSYNC_APP_WEBHOOK_URLS=app_url,
        HOOKSYNC_LEASE_SECONDS="90",
    )
    context = AppContext(load_settings(env))
    yield context
    context.close()
