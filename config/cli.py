"""The ``hooksync`` command: the Procfile's processes and the operator's tools.

    hooksync migrate        apply database migrations (the Procfile's release step)
    hooksync web            gunicorn serving ingress on HOOKSYNC_HOST:HOOKSYNC_PORT
    hooksync worker         a Celery worker
    hooksync beat           Celery beat driving the scheduler tick
    hooksync check [--json] validate the integrations file and every script
    hooksync redis start|stop|url   the embedded Redis (when HOOKSYNC_REDIS_URL is unset)

Start-up problems (a bad variable, an unmigrated database, an invalid nango.yaml) end the
process with one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from config.errors import ConfigError
from config.integrations import Integrations, Problem
from config.settings import Settings, load_settings

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except ConfigError as error:
        print(f"hooksync: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hooksync", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(required=True, metavar="command")

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
    from cache.db import migrate

    settings = load_settings()
    migrate(settings.database_url)
    print("hooksync: database is migrated", file=sys.stderr)
    return 0


def _export_redis_url(settings: Settings) -> None:
    """Start the embedded Redis if needed and pass its URL to the process we exec."""
    if settings.redis_url is None:
        from config.redis_server import ensure_embedded_redis

        os.environ["HOOKSYNC_REDIS_URL"] = ensure_embedded_redis(settings.var_dir)


def _assert_ready(settings: Settings) -> None:
    from cache.db import assert_migrated, make_engine

    engine = make_engine(settings.database_url)
    try:
        assert_migrated(engine)
    finally:
        engine.dispose()


def _web(args: argparse.Namespace) -> int:
    settings = load_settings()
    _assert_ready(settings)
    _export_redis_url(settings)
    bind = f"{settings.host}:{settings.port}"
    _exec(
        [sys.executable, "-m", "gunicorn", "--bind", bind, "--workers", str(args.workers),
         "--access-logfile", "-", "--graceful-timeout", "10", "ingress.app:create_app()"]
    )  # fmt: skip
    return 0


def _worker(args: argparse.Namespace) -> int:
    settings = load_settings()
    _assert_ready(settings)
    _export_redis_url(settings)
    command = [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
               "--loglevel", "INFO", "--without-gossip", "--without-mingle"]  # fmt: skip
    if args.concurrency:
        command += ["--concurrency", str(args.concurrency)]
    _exec(command)
    return 0


def _beat(_args: argparse.Namespace) -> int:
    settings = load_settings()
    _assert_ready(settings)
    _export_redis_url(settings)
    # The beat schedule lives in memory (workers.celery_app): several beats share no file.
    _exec(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "beat", "--loglevel", "INFO"]
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from config.loader import describe, load_integrations

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
        syncs = sum(len(i.syncs) for i in integrations.integrations.values())
        print(
            f"{len(integrations.integrations)} integration(s), {syncs} sync(s), "
            f"{len(integrations.errors)} error(s), {len(integrations.warnings)} warning(s)"
        )
    return 1 if integrations.errors else 0


def _check_scripts(settings: Settings, integrations: Integrations) -> list[Problem]:
    """Import every sync script and check it defines what its sync needs.

    ``fetch_data`` always (the scheduler polls every sync); ``on_webhook_payload_received``
    when the sync has webhook subscriptions. Missing files are the loader's
    ``script_missing`` already.
    """
    from config.errors import FatalError
    from workers.scripts import load_function, script_path

    problems = []
    for key, integration in integrations.integrations.items():
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
