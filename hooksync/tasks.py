"""The Celery app of the ``worker`` and ``beat`` processes, with every hooksync task.

``celery -A hooksync.tasks worker`` (what ``hooksync worker`` execs) finds the module-level
``app``: a lazy proxy that reads settings, and starts the embedded Redis, only when Celery
first touches it, so importing this module has no side effect.
"""

from __future__ import annotations

from celery import Celery
from celery.local import PromiseProxy

from cache.context import AppContext
from config.errors import HooksyncError
from scheduler.tasks import register_tick
from workers.celery_app import make_celery
from workers.tasks import register_tasks

__all__ = ["app", "make_app"]


def make_app(ctx: AppContext | None = None) -> Celery:
    """``workers.celery_app.make_celery`` with the workers' tasks and the scheduler's tick.

    Raises:
        ConfigError: When ``ctx`` is None and the settings are invalid.
    """
    celery = make_celery(ctx)
    register_tasks(celery)
    register_tick(celery)
    return celery


def _make_cli_app() -> Celery:
    try:
        return make_app()
    except HooksyncError as error:
        raise SystemExit(f"hooksync: {error}") from None


#: The entry point of ``celery -A hooksync.tasks``.
app: Celery = PromiseProxy(_make_cli_app)  # type: ignore[assignment]
