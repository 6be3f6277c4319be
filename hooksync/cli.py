"""The ``hooksync`` command: the Procfile's processes and the operator's tools.

    hooksync migrate        apply database migrations (the Procfile's release step)
    hooksync web            gunicorn serving ingress on HOOKSYNC_HOST:HOOKSYNC_PORT
    hooksync worker         a Celery worker
    hooksync beat           Celery beat driving the scheduler tick
    hooksync check [--json] validate the integrations file and every script
    hooksync redis start|stop|url   the embedded Redis (when HOOKSYNC_REDIS_URL is unset)
    hooksync up             release, then web, worker and beat in the foreground (hooksync.up)

Operating a running deployment, through its API at HOOKSYNC_URL (default
http://HOOKSYNC_HOST:HOOKSYNC_PORT) with HOOKSYNC_SECRET_KEY (hooksync.operations):

    hooksync status <integration> [--sync S] [--connection-id C] [--json]
    hooksync trigger|pause|start <integration> <sync>... [--connection-id C] [--reset]
    hooksync records <integration> <model> --connection-id C [--modified-after T] [--json]
    hooksync webhooks [--integration K --state S --since T --until T] [--replay ID] [--json]
    hooksync notifications [--state S --connection-id C --since T] [--retry ID |
                           --retry-failed --since T] [--json]

And where the database is (it reads the connection's credentials; hooksync.dryrun):

    hooksync dryrun <integration> <sync> <connection_id> [--full] [--json]
                            run fetch_data against the real API, print what would be
                            saved, write nothing

Start-up problems (a bad variable, an unmigrated database, an invalid nango.yaml, a module
the installation lacks) and bad arguments end the process with one line on stderr and exit
status 2; a failed operation (the API's error, an unreachable API, a failed script) with
one line and exit status 1. The API key is never printed.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace

from cache.db import assert_migrated, make_engine, migrate
from config.errors import BadInputError, ConfigError, FatalError, HooksyncError
from config.integrations import Integrations, Problem
from config.loader import describe, load_integrations
from config.logs import configure_logging
from config.settings import Settings, load_log_options, load_settings
from hooksync import operations, up
from hooksync.api_client import ApiError
from hooksync.metrics import prepare_metrics_dir
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
        "prometheus_client": "the metrics client",
        "ingress.app": "the web application",
        "ingress.gunicorn_worker": "the web's gunicorn worker class (gevent)",
    },
    "worker": {
        "redis": "the Redis client",
        TRANSPORT: "Celery's Redis transport",
        "prometheus_client": "the metrics client",
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
        # The command's own lines (alembic's, a start-up check's) in the processes' format;
        # the processes it execs configure theirs again (gunicorn's logger class, Celery's
        # setup_logging signal).
        configure_logging(*load_log_options())
        # Alembic logs each plugin it sets up at INFO on every start-up check; its
        # warnings are what an operator needs.
        logging.getLogger("alembic").setLevel(logging.WARNING)
        return int(args.handler(args) or 0)
    except InstallError as error:
        print(f"hooksync {error.process}: {error}", file=sys.stderr)
        return 2
    except ConfigError as error:
        print(f"hooksync: {error}", file=sys.stderr)
        return 2
    except BadInputError as error:
        print(f"hooksync {args.command}: {error}", file=sys.stderr)
        return 2
    except ApiError as error:
        print(f"hooksync {args.command}: {error}", file=sys.stderr)
        return 1
    except HooksyncError as error:  # a dry run's script failing, …
        print(f"hooksync {args.command}: {error}", file=sys.stderr)
        return 1
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
    parser = argparse.ArgumentParser(
        prog="hooksync", description=__doc__.split("\n\n")[0].replace("``", "")
    )
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

    up.add_command(commands)
    operations.add_commands(commands)

    dryrun = commands.add_parser(
        "dryrun",
        help="run a sync's fetch_data and print what it would save, writing nothing",
        description="Run the sync script's fetch_data against the real external API with the "
        "connection's stored credentials and print what would be saved; nothing is written. "
        "Runs where the database is reachable: it reads the credentials from it.",
    )
    dryrun.add_argument("integration", help="the integration key (provider_config_key)")
    dryrun.add_argument("sync", help="the sync name")
    dryrun.add_argument("connection_id", help="the connection whose credentials to use")
    dryrun.add_argument(
        "--full", action="store_true", help="a full run even if the next poll is incremental"
    )
    dryrun.add_argument("--json", action="store_true", help="every record, as JSON")
    dryrun.set_defaults(handler=_dryrun)
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
    # Before anything imports prometheus_client: it picks its storage at import time.
    prepare_metrics_dir(settings.var_dir)
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
         # Error and access logs in HOOKSYNC_LOG_FORMAT, with the request's ids.
         "--logger-class", "ingress.logs.GunicornLogger",
         # The worker class (gevent, JSON error pages), the limits on slow clients and the
         # server hooks (a dead worker's metrics files, hooksync/metrics.py).
         "--config", "python:hooksync.gunicorn_config",
         "ingress.app:create_app(check_database=False)"]
    )  # fmt: skip
    return 0


def _worker(args: argparse.Namespace) -> int:
    settings = _ready_to_exec("worker")
    command = [sys.executable, "-m", "celery", *_banner_flags(settings), "-A", "hooksync.tasks",
               "worker",
               "--loglevel", "INFO", "--without-gossip", "--without-mingle"]  # fmt: skip
    if args.concurrency:
        command += ["--concurrency", str(args.concurrency)]
    _exec(command)
    return 0


def _beat(_args: argparse.Namespace) -> int:
    settings = _ready_to_exec("beat")
    # The beat schedule lives in memory (workers.celery_app.celery_config): beats share no file.
    _exec([sys.executable, "-m", "celery", *_banner_flags(settings), "-A", "hooksync.tasks",
           "beat", "--loglevel", "INFO"])  # fmt: skip
    return 0


def _banner_flags(settings: Settings) -> list[str]:
    # Celery prints its start-up banner with print(), not through logging: in JSON mode it
    # would be the only lines of the log that are not JSON. Its "ready" line is logged.
    return ["--quiet"] if settings.log_format == "json" else []


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


def _dryrun(args: argparse.Namespace) -> int:
    # Imported here: it loads the whole worker runtime (Redis client, Celery publishing),
    # which an incomplete installation lacks; the other commands must still name that.
    from hooksync.dryrun import run_command

    return run_command(args)


def _exec(command: list[str]) -> None:
    """Replace this process, so signals from the Procfile runner reach the server itself."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main())
