"""The Celery application: transport only, every decision lives in the database.

``make_celery(ctx)`` builds an app for one ``AppContext``, without tasks: publishing goes by
task name (``workers.enqueue``), so a process that only sends messages (the web) needs none.
The processes that run tasks get the app the ``hooksync`` command composes
(``hooksync.tasks``: this app plus the workers' and the scheduler's tasks). Nothing connects
until a message is sent or a worker starts.

Worker and beat refuse to start against an unmigrated database (``worker_init`` /
``beat_init``), and every prefork child drops the database connections it inherited.
"""

from __future__ import annotations

import logging
import sys
import weakref
from typing import Any

import redis
from celery import Celery, signals
from kombu.transport.redis import PRIORITY_STEPS

from cache.context import AppContext
from cache.db import assert_migrated
from config.errors import HooksyncError
from config.logs import configure_logging
from config.settings import Settings, load_log_options, load_settings
from workers.broker import BrokerAMQP

__all__ = [
    "DEFAULT_QUEUE",
    "TICK_PRIORITY",
    "WORK_PRIORITY",
    "broker_url",
    "celery_for",
    "context_of",
    "make_celery",
    "queue_length",
    "queue_lists",
]

logger = logging.getLogger(__name__)

#: Our own queue name, so another Celery app sharing the Redis never eats our messages.
DEFAULT_QUEUE = "hooksync"

#: Redis only carries ids; a message a dead worker held is recovered by the lease sweeper
#: long before this, so the broker's own redelivery is a last resort, not the mechanism.
#: At least this, and always above the tasks' hard time limit (``celery_config``): a task
#: still legitimately running must not have its message handed to a second worker.
VISIBILITY_TIMEOUT_SECONDS = 3600

#: The visibility timeout's margin over the hard time limit.
VISIBILITY_MARGIN_SECONDS = 600

#: The tasks that execute scripts: their hard time limit is the runs' (a backstop for a
#: script that ignores the per-run soft limit of ``workers.limits``; Celery kills the child).
_SCRIPT_TASKS = ("hooksync.run_sync", "hooksync.drain_inbox")

#: Message priorities. kombu's Redis transport keeps one list per priority step and BRPOPs
#: them lowest number first, so the tick (whose sweeper recovers what a dead worker held)
#: is taken ahead of a backlog of work as soon as a pool slot is free, instead of waiting
#: behind the very work it should recover.
TICK_PRIORITY = 0
WORK_PRIORITY = 3

#: kombu's separator between a queue's name and its priority step (``Channel.sep``).
_PRIORITY_SEP = "\x06\x16"

#: Where ``celery_for`` caches the producing app of an ``AppContext``.
_CTX_KEY = "celery_app"

_apps: weakref.WeakSet[Celery] = weakref.WeakSet()


def broker_url(redis_url: str) -> str:
    """Translate a redis-py URL into kombu's spelling (``unix://`` → ``redis+socket://``)."""
    if redis_url.startswith("unix://"):
        return "redis+socket://" + redis_url[len("unix://") :]
    return redis_url


def celery_config(settings: Settings, redis_url: str) -> dict[str, Any]:
    """The whole Celery configuration, derived from settings (ARCHITECTURE.md §10)."""
    # Ticks that pile up behind long runs are worthless: the next one does the same work.
    # Generous, so modest clock skew between beat and worker machines drops nothing.
    tick_expires = max(30.0, settings.tick_seconds * 6)
    hard_limit = settings.run_hard_limit_seconds
    return {
        "broker_url": broker_url(redis_url),
        "broker_connection_retry_on_startup": True,
        # Bounds how long a publish waits for a Redis that is down, so the webhook
        # receiver answers 503 quickly instead of hanging.
        "broker_connection_timeout": 2.0,
        "broker_transport_options": {
            "visibility_timeout": max(
                VISIBILITY_TIMEOUT_SECONDS, int(hard_limit) + VISIBILITY_MARGIN_SECONDS
            ),
            "socket_connect_timeout": 2.0,
            "socket_timeout": 10.0,
            "max_retries": 1,
        },
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # No Celery soft limit: the drain runs many runs in one task, so the soft limit is
        # per run (``workers.limits``); the hard one kills a child stuck past it.
        "task_annotations": {name: {"time_limit": hard_limit} for name in _SCRIPT_TASKS},
        "task_default_queue": DEFAULT_QUEUE,
        "task_default_priority": WORK_PRIORITY,
        "enable_utc": True,
        "timezone": "UTC",
        # In-memory beat schedule: the tick has no state worth persisting, and several
        # beat processes sharing a var/ folder must not fight over a shelve file.
        "beat_scheduler": "celery.beat:Scheduler",
        "beat_schedule": {
            "hooksync-tick": {
                "task": "hooksync.tick",
                "schedule": settings.tick_seconds,
                "options": {"expires": tick_expires, "priority": TICK_PRIORITY},
            }
        },
        # Logging is ours (``_on_setup_logging``): Celery must not replace the root handler.
        "worker_hijack_root_logger": False,
    }


def make_celery(ctx: AppContext | None = None) -> Celery:
    """Build a Celery app bound to ``ctx`` (a new context from the environment if None).

    Args:
        ctx: The process's context; tasks run by this app use it.

    Returns:
        An app without tasks (``hooksync.tasks`` adds them for the processes that run
        them). Nothing has connected yet.

    Raises:
        ConfigError: When ``ctx`` is None and the settings are invalid.
    """
    if ctx is None:
        ctx = AppContext(load_settings())
    # BrokerAMQP: kombu's Redis transport made to survive a broker restart (workers.broker).
    celery = Celery("hooksync", set_as_current=False, amqp=BrokerAMQP)
    celery.conf.update(celery_config(ctx.settings, ctx.redis_url))
    celery.hooksync_ctx = ctx  # type: ignore[attr-defined]
    # The first app made for a context is the one it sends with (a worker's own app).
    ctx.handle(_CTX_KEY, lambda: celery, close=Celery.close)
    _apps.add(celery)
    return celery


def queue_lists(queue: str = DEFAULT_QUEUE) -> list[str]:
    """The Redis lists that hold ``queue``, in the order a worker fetches them.

    kombu's Redis transport keeps a queue as one list per priority step: the queue's own
    name for priority 0, ``<queue>\\x06\\x16<step>`` for the others.
    """
    return [queue] + [f"{queue}{_PRIORITY_SEP}{step}" for step in PRIORITY_STEPS if step]


def queue_length(client: redis.Redis, queue: str = DEFAULT_QUEUE) -> int:
    """Messages waiting in ``queue`` (not those a worker holds unacknowledged)."""
    pipe = client.pipeline(transaction=False)
    for name in queue_lists(queue):
        pipe.llen(name)
    return sum(int(length) for length in pipe.execute())


def celery_for(ctx: AppContext) -> Celery:
    """The one Celery app of ``ctx`` (created on first use), for sending messages."""
    return ctx.handle(_CTX_KEY, lambda: make_celery(ctx))


def context_of(celery: Celery) -> AppContext:
    """The ``AppContext`` a task of ``celery`` works with."""
    return celery.hooksync_ctx  # type: ignore[attr-defined,no-any-return]


def _refuse_unmigrated(celery: Any, process: str) -> None:
    if celery not in _apps:
        return
    # Alembic logs its plugin set-up at INFO; the check is one query, not a migration.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        assert_migrated(context_of(celery).engine)
    except HooksyncError as error:
        # One line, no traceback: this is an operator's mistake, not a bug. The real
        # stderr: by now Celery may have redirected sys.stderr into its logger.
        print(f"hooksync {process}: {error}", file=sys.__stderr__ or sys.stderr, flush=True)
        raise SystemExit(1) from None


@signals.celeryd_init.connect
@signals.setup_logging.connect
def _on_setup_logging(**_: Any) -> None:
    # Connected, so Celery configures no logging of its own (worker and beat): every line,
    # its task received/succeeded lines included, goes through config.logs in
    # HOOKSYNC_LOG_FORMAT, with the ids the task binds. Prefork children inherit it.
    # celeryd_init comes earlier, before the worker's first warning (running as root).
    configure_logging(*load_log_options())


@signals.worker_init.connect
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    _refuse_unmigrated(getattr(sender, "app", None), "worker")


@signals.beat_init.connect
def _on_beat_init(sender: Any = None, **_: Any) -> None:
    _refuse_unmigrated(getattr(sender, "app", None), "beat")


@signals.worker_process_init.connect
def _on_worker_process_init(**_: Any) -> None:
    # A forked child must not share the parent's pooled database sockets; close=False
    # leaves them open for the parent and only forgets them here.
    for celery in list(_apps):
        ctx = context_of(celery)
        if "engine" in ctx.__dict__:
            ctx.engine.dispose(close=False)
