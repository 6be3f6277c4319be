"""The ``hooksync`` command: the Procfile's processes and the operator's tools.

    hooksync migrate        apply database migrations (the Procfile's release step)
    hooksync web            gunicorn serving ingress on HOOKSYNC_HOST:HOOKSYNC_PORT
    hooksync worker         a Celery worker
    hooksync beat           Celery beat driving the scheduler tick
    hooksync check [--json] validate the integrations file and every script
    hooksync redis start|stop|url   the embedded Redis (when HOOKSYNC_REDIS_URL is unset)

Start-up problems (a bad variable, an unmigrated database, an invalid nango.yaml, a module
the installation lacks) end the process with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import replace

from cache.db import assert_migrated, make_engine, migrate
from config.errors import ConfigError, FatalError
from config.integrations import Integrations, Problem
from config.loader import describe, load_integrations
from config.settings import Settings, load_settings
from workers.scripts import load_function, script_path

__all__ = ["check_imports", "main"]

#: kombu's Redis transport. kombu imports it only on the first connection, and it needs the
#: celery[redis] extra (``packaging``, a recent ``redis``).
TRANSPORT = "kombu.transport.redis"

#: What each long-running process loads after ``exec``, imported before it: a module missing
#: there would otherwise surface late and misleadingly (the web answered webhooks with 503
#: "is Redis running?" for a missing ``packaging``). Module -> what it is, for the message;
#: ``redis`` before the transport, which fails obscurely without it (AttributeError).
STARTUP_IMPORTS: dict[str, dict[str, str]] = {
    "web": {
        "redis": "the Redis client",
        TRANSPORT: "Celery's Redis transport",
        "gunicorn.app.wsgiapp": "gunicorn",
        "ingress.app": "the web application",
    },
    "worker": {
        "redis": "the Redis client",
        TRANSPORT: "Celery's Redis transport",
        "hooksync.tasks": "the Celery application",
    },
    "beat": {
        "redis": "the Redis client",
        TRANSPORT: "Celery's Redis transport",
        "hooksync.tasks": "the Celery application",
    },
}


class InstallError(ConfigError):
    """A module a process needs cannot be imported: the installation is at fault, not Redis."""

    def __init__(self, process: str, message: str) -> None:
        super().__init__(message)
        self.process = process


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except InstallError as error:
        print(f"hooksync {error.process}: {error}", file=sys.stderr)
        return 2
    except ConfigError as error:
        print(f"hooksync: {error}", file=sys.stderr)
        return 2
    except ImportError as error:
        # Whatever the command imports itself: alembic for migrate, a database driver, …
        print(f"hooksync {args.command}: {_describe(error, None)}", file=sys.stderr)
        return 2


def check_imports(process: str) -> None:
    """Import what ``process`` loads after ``exec``, so a gap in the install is named.

    Args:
        process: ``web``, ``worker`` or ``beat``.

    Raises:
        InstallError: A module cannot be imported; the message names it and the fix.
    """
    for module, what in STARTUP_IMPORTS[process].items():
        try:
            importlib.import_module(module)
        except ImportError as error:
            message = _describe(error, f"{what} ({module})", is_transport=module == TRANSPORT)
            raise InstallError(process, message) from error


def _describe(error: ImportError, what: str | None, *, is_transport: bool = False) -> str:
    """One line naming the module that failed to import, and the fix."""
    if isinstance(error, ModuleNotFoundError) and error.name:
        cause = f"module {error.name!r} is not installed"
    else:  # e.g. "cannot import name 'X' from 'y'": a broken or mismatched package
        cause = f"{type(error).__name__}: {error}"
    loading = f"cannot load {what}: " if what else ""
    if is_transport:
        return (
            f"{loading}{cause} (an incomplete installation, not a Redis connection problem); "
            "reinstall hooksync with its dependencies: pip install <hooksync wheel or source "
            "folder> (Celery's Redis support is the celery[redis] extra)"
        )
    return (
        f"{loading}{cause} (an incomplete installation); reinstall hooksync with its "
        "dependencies: pip install <hooksync wheel or source folder>"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hooksync", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(required=True, metavar="command", dest="command")

    commands.add_parser("migrate", help="apply database migrations").set_defaults(handler=_migrate)

    web = commands.add_parser("web", help="serve webhooks and the API with gunicorn")
    web.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "2")))
    web.set_defaults(handler=_web)

    worker = commands.add_parser("worker", help="run a Celery worker")
    worker.add_argument("--concurrency", type=int, default=None)
    worker.set_defaults(handler=_worker)

    commands.add_parser("beat", help="run Celery beat (the scheduler tick)").set_defaults(
        handler=_beat
    )

    check = commands.add_parser("check", help="validate the integrations file and scripts")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(handler=_check)

    redis_cmd = commands.add_parser("redis", help="manage the embedded Redis")
    redis_cmd.add_argument("action", choices=["start", "stop", "url"])
    redis_cmd.set_defaults(handler=_redis)
    return parser


def _migrate(_args: argparse.Namespace) -> int:
    settings = load_settings()
    migrate(settings.database_url)
    print("hooksync: database is migrated", file=sys.stderr)
    return 0


def _export_redis_url(settings: Settings) -> None:
    """Start the embedded Redis if needed and pass its URL to the process we exec."""
    if settings.redis_url is None:
        # Imported here, after ``check_imports``: it needs the redis client, whose absence
        # the check names as an installation problem instead of a traceback.
        from config.redis_server import ensure_embedded_redis

        os.environ["HOOKSYNC_REDIS_URL"] = ensure_embedded_redis(settings.var_dir)


def _assert_ready(settings: Settings) -> None:
    engine = make_engine(settings.database_url)
    try:
        assert_migrated(engine)
    finally:
        engine.dispose()


def _ready_to_exec(process: str) -> Settings:
    """What every long-running process checks before it execs: settings, the modules it
    will load, a migrated database; then the embedded Redis started if it is the one."""
    settings = load_settings()
    check_imports(process)
    _assert_ready(settings)
    _export_redis_url(settings)
    return settings


def _web(args: argparse.Namespace) -> int:
    # The database is checked once here, so each gunicorn worker skips it (and never
    # imports alembic).
    settings = _ready_to_exec("web")
    bind = f"{settings.host}:{settings.port}"
    _exec(
        [sys.executable, "-m", "gunicorn", "--bind", bind, "--workers", str(args.workers),
         "--access-logfile", "-", "--graceful-timeout", "10",
         "ingress.app:create_app(check_database=False)"]
    )  # fmt: skip
    return 0


def _worker(args: argparse.Namespace) -> int:
    _ready_to_exec("worker")
    command = [sys.executable, "-m", "celery", "-A", "hooksync.tasks", "worker",
               "--loglevel", "INFO", "--without-gossip", "--without-mingle"]  # fmt: skip
    if args.concurrency:
        command += ["--concurrency", str(args.concurrency)]
    _exec(command)
    return 0


def _beat(_args: argparse.Namespace) -> int:
    _ready_to_exec("beat")
    # The beat schedule lives in memory (workers.celery_app.celery_config): beats share no file.
    _exec([sys.executable, "-m", "celery", "-A", "hooksync.tasks", "beat", "--loglevel", "INFO"])
    return 0


def _check(args: argparse.Namespace) -> int:
    settings = load_settings()
    integrations = load_integrations(settings.integrations_dir, os.environ)
    integrations = replace(
        integrations,
        errors=integrations.errors + tuple(_check_scripts(settings, integrations)),
    )
    if args.json:
        print(json.dumps(describe(integrations), indent=2, sort_keys=True))
    else:
        for problem in integrations.errors:
            print(f"error: {problem}")
        for problem in integrations.warnings:
            print(f"warning: {problem}")
        syncs = sum(len(i.syncs) for i in integrations.by_key.values())
        print(
            f"{len(integrations.by_key)} integration(s), {syncs} sync(s), "
            f"{len(integrations.errors)} error(s), {len(integrations.warnings)} warning(s)"
        )
    return 1 if integrations.errors else 0


def _check_scripts(settings: Settings, integrations: Integrations) -> list[Problem]:
    """Import every sync script and check it defines what its sync needs.

    ``fetch_data`` always (the scheduler polls every sync); ``on_webhook_payload_received``
    when the sync has webhook subscriptions. Missing files are the loader's
    ``script_missing`` already.
    """
    problems = []
    for key, integration in integrations.by_key.items():
        for name, sync in integration.syncs.items():
            if not script_path(settings.integrations_dir, key, name).exists():
                continue
            needed = ["fetch_data"]
            if sync.webhook_subscriptions:
                needed.append("on_webhook_payload_received")
            for function in needed:
                try:
                    load_function(settings.integrations_dir, key, name, function)
                except FatalError as error:
                    problems.append(
                        Problem("script_invalid", str(error), f"integrations.{key}.syncs.{name}")
                    )
    return problems


def _redis(args: argparse.Namespace) -> int:
    # The redis client is a dependency the other commands check first (``check_imports``).
    from config.redis_server import embedded_redis_url, ensure_embedded_redis, stop_embedded_redis

    settings = load_settings()
    if settings.redis_url is not None:
        raise ConfigError(
            f"HOOKSYNC_REDIS_URL is set ({settings.redis_url.split('@')[-1]!r}): "
            "the embedded Redis is only used when it is unset"
        )
    if args.action == "start":
        print(ensure_embedded_redis(settings.var_dir))
    elif args.action == "stop":
        stopped = stop_embedded_redis(settings.var_dir)
        print("stopped" if stopped else "not running")
    else:
        print(embedded_redis_url(settings.var_dir))
    return 0


def _exec(command: list[str]) -> None:
    """Replace this process, so signals from the Procfile runner reach the server itself."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
