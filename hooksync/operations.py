"""The operator commands that act through a running API: sync control, records, webhooks,
notifications (``hooksync status|trigger|pause|start|records|webhooks|notifications``).

Each command is one or two API calls (``hooksync.api_client``) and a table or, with
``--json``, the API's answer as it came. They need only the API's address and key, so they
work from any machine that can reach ``hooksync web``. A failed call ends the command with
one line on stderr and exit status 1 (``hooksync.cli.main``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from cache.models import NotificationState, WebhookState
from config.errors import BadInputError
from hooksync.api_client import ApiClient, client_from_environment, path_part
from hooksync.output import parse_when, print_json, print_table, short_time

__all__ = ["add_commands"]

#: ``GET /webhooks/events`` states, for --help and argparse's own check.
WEBHOOK_STATES = tuple(state.value for state in WebhookState)
#: ``GET /notifications`` states.
NOTIFICATION_STATES = tuple(state.value for state in NotificationState)

Handler = Callable[[argparse.Namespace, ApiClient], int]


def add_commands(commands: Any) -> None:
    """Add the API commands to the ``hooksync`` parser's sub-commands.

    Args:
        commands: What ``ArgumentParser.add_subparsers`` returned.
    """
    status = _command(commands, "status", _status, "each sync's state, last and next run, records")
    status.add_argument("integration", help="the integration key (provider_config_key)")
    status.add_argument(
        "--sync", action="append", dest="syncs", metavar="SYNC", help="only this sync (repeatable)"
    )
    status.add_argument("--connection-id", help="only this connection (default: all)")
    _json_option(status)

    trigger = _command(commands, "trigger", _trigger, "run syncs now")
    _control_arguments(trigger)
    trigger.add_argument(
        "--reset", action="store_true", help="a full run (INITIAL) instead of an incremental one"
    )
    trigger.add_argument(
        "--empty-cache",
        action="store_true",
        help="also delete the cached records of the syncs' models before the full run",
    )

    pause = _command(commands, "pause", _pause, "stop scheduling syncs (webhooks still run)")
    _control_arguments(pause)
    start = _command(commands, "start", _start, "resume scheduling syncs")
    _control_arguments(start)

    records = _command(commands, "records", _records, "read a connection's cached records")
    records.add_argument("integration", help="the integration key (provider_config_key)")
    records.add_argument("model", help="the model name, e.g. Task")
    records.add_argument("--connection-id", required=True, help="the connection")
    records.add_argument(
        "--modified-after", metavar="TIME", help="only records changed after TIME (ISO or age)"
    )
    records.add_argument("--filter", help="a comma list of added, updated, deleted (default: all)")
    records.add_argument("--limit", type=int, default=100, help="at most this many (1-10000)")
    records.add_argument("--cursor", help="continue after the page that printed this cursor")
    _json_option(records)

    webhooks = _command(
        commands, "webhooks", _webhooks, "received webhooks and their routing; replay one"
    )
    webhooks.add_argument("--replay", metavar="ID", help="route event ID again and run it")
    webhooks.add_argument("--integration", help="only this integration's events")
    webhooks.add_argument("--state", choices=WEBHOOK_STATES, help="only events in this state")
    _time_window(webhooks)
    webhooks.add_argument("--limit", type=int, help="at most this many (default 50)")
    _json_option(webhooks)

    notifications = _command(
        commands,
        "notifications",
        _notifications,
        "completion webhooks sent to the app; retry failed ones",
    )
    action = notifications.add_mutually_exclusive_group()
    action.add_argument("--retry", type=int, metavar="ID", help="retry notification ID now")
    action.add_argument(
        "--retry-failed",
        action="store_true",
        help="retry every failed notification created since --since",
    )
    notifications.add_argument(
        "--state", choices=NOTIFICATION_STATES, help="only notifications in this state"
    )
    notifications.add_argument("--connection-id", help="only this connection's notifications")
    _time_window(notifications)
    notifications.add_argument("--limit", type=int, help="at most this many (default 100)")
    _json_option(notifications)


# -- commands ---------------------------------------------------------------------------------


def _status(args: argparse.Namespace, api: ApiClient) -> int:
    body = api.get(
        "/sync/status",
        {
            "provider_config_key": args.integration,
            "syncs": ",".join(args.syncs) if args.syncs else "*",
            "connection_id": args.connection_id,
        },
    )
    if args.json:
        print_json(body)
        return 0
    rows = [
        [
            sync.get("connection_id"),
            sync.get("name"),
            sync.get("status"),
            sync.get("type"),
            short_time(sync.get("finishedAt")),
            short_time(sync.get("nextScheduledSyncAt")),
            sync.get("frequency"),
            _counts(sync.get("latestResult")),
            _counts(sync.get("recordCount")),
        ]
        for sync in body.get("syncs", [])
    ]
    print_table(
        ["CONNECTION", "SYNC", "STATUS", "TYPE", "FINISHED", "NEXT RUN", "FREQUENCY",
         "LAST RESULT", "RECORDS"],
        rows,
        empty=f"no connections of {args.integration!r}",
    )  # fmt: skip
    return 0


def _trigger(args: argparse.Namespace, api: ApiClient) -> int:
    opts = {name: True for name, on in (("reset", args.reset), ("emptyCache", args.empty_cache))}
    _control(api, "/sync/trigger", args, {"opts": {k: v for k, v in opts.items() if v}})
    kind = "full run" if args.reset or args.empty_cache else "run"
    print(f"triggered a {kind} of {_names(args)} for {_scope(args)}")
    return 0


def _pause(args: argparse.Namespace, api: ApiClient) -> int:
    _control(api, "/sync/pause", args)
    print(f"paused {_names(args)} for {_scope(args)}")
    return 0


def _start(args: argparse.Namespace, api: ApiClient) -> int:
    _control(api, "/sync/start", args)
    print(f"started {_names(args)} for {_scope(args)}")
    return 0


def _records(args: argparse.Namespace, api: ApiClient) -> int:
    modified_after = (
        parse_when(args.modified_after, "--modified-after") if args.modified_after else None
    )
    page = api.get(
        "/records",
        {
            "model": args.model,
            "limit": args.limit,
            "modified_after": modified_after,
            "filter": args.filter,
            "cursor": args.cursor,
        },
        headers={"Connection-Id": args.connection_id, "Provider-Config-Key": args.integration},
    )
    if args.json:
        print_json(page)
        return 0
    rows = []
    for record in page.get("records", []):
        meta = record.get("_nango_metadata") or {}
        data = {k: v for k, v in record.items() if k not in {"id", "_nango_metadata"}}
        rows.append(
            [record.get("id"), meta.get("last_action"), short_time(meta.get("last_modified_at")),
             data]
        )  # fmt: skip
    print_table(["ID", "ACTION", "MODIFIED", "DATA"], rows, empty=f"no {args.model} records match")
    if page.get("next_cursor"):
        print(f"more: --cursor {page['next_cursor']}")
    return 0


def _webhooks(args: argparse.Namespace, api: ApiClient) -> int:
    if args.replay:
        body = api.post(f"/webhooks/events/{path_part(args.replay)}/replay")
        if args.json:
            print_json(body)
            return 0
        print(
            f"replayed event {body.get('id', args.replay)} ({body.get('state', '?')}): "
            f"{len(body.get('run_ids') or [])} run(s), "
            f"{len(body.get('notification_ids') or [])} notification(s) queued"
        )
        return 0
    body = api.get(
        "/webhooks/events",
        {
            "provider_config_key": args.integration,
            "state": args.state,
            "since": _when(args.since, "--since"),
            "until": _when(args.until, "--until"),
            "limit": args.limit,
        },
    )
    if args.json:
        print_json(body)
        return 0
    rows = [
        [
            event.get("id"),
            short_time(event.get("received_at")),
            event.get("provider_config_key"),
            event.get("event_type"),
            event.get("state"),
            _runs(event),
            event.get("error"),
        ]
        for event in body.get("events", [])
    ]
    print_table(
        ["ID", "RECEIVED", "INTEGRATION", "TYPE", "STATE", "RUNS", "ERROR"],
        rows,
        empty="no webhook events match",
    )
    return 0


def _notifications(args: argparse.Namespace, api: ApiClient) -> int:
    if args.retry is not None:
        body = api.post(f"/notifications/{args.retry}/retry")
        if args.json:
            print_json(body)
            return 0
        notification = body.get("notification") or {}
        print(f"notification {args.retry} queued again ({notification.get('state', '?')})")
        return 0
    if args.retry_failed:
        if not args.since:
            raise _usage("--retry-failed needs --since, e.g. --since 1h or --since 2026-11-26")
        body = api.post(
            "/notifications/retry-failed", params={"since": parse_when(args.since, "--since")}
        )
        if args.json:
            print_json(body)
            return 0
        ids = ", ".join(str(i) for i in body.get("ids") or []) or "none"
        print(f"retried {body.get('retried', 0)} failed notification(s): {ids}")
        return 0
    body = api.get(
        "/notifications",
        {
            "state": args.state,
            "connection_id": args.connection_id,
            "since": _when(args.since, "--since"),
            "until": _when(args.until, "--until"),
            "limit": args.limit,
        },
    )
    if args.json:
        print_json(body)
        return 0
    rows = []
    for item in body.get("notifications", []):
        sent = item.get("body") if isinstance(item.get("body"), dict) else {}
        rows.append(
            [
                item.get("id"),
                short_time(item.get("created_at")),
                item.get("state"),
                item.get("attempts"),
                item.get("last_status"),
                sent.get("connectionId"),
                sent.get("syncName"),
                sent.get("model"),
                sent.get("type"),
                item.get("url"),
            ]
        )
    print_table(
        ["ID", "CREATED", "STATE", "ATTEMPTS", "LAST STATUS", "CONNECTION", "SYNC", "MODEL",
         "TYPE", "URL"],
        rows,
        empty="no notifications match",
    )  # fmt: skip
    return 0


# -- helpers ----------------------------------------------------------------------------------


def _command(commands: Any, name: str, handler: Handler, summary: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=summary, description=f"{summary} (through the API at HOOKSYNC_URL)"
    )
    parser.set_defaults(handler=_with_client(handler))
    return parser


def _with_client(handler: Handler) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        api = client_from_environment()
        try:
            return handler(args, api)
        finally:
            api.close()

    return run


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the API's JSON answer")


def _time_window(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", metavar="TIME", help="from TIME: ISO-8601, or an age (2h, 7d)")
    parser.add_argument("--until", metavar="TIME", help="up to TIME: ISO-8601, or an age")


def _control_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("integration", help="the integration key (provider_config_key)")
    parser.add_argument("syncs", nargs="+", metavar="sync", help="sync names, or '*' for all")
    parser.add_argument(
        "--connection-id", help="only this connection (default: every connection of it)"
    )


def _control(
    api: ApiClient, path: str, args: argparse.Namespace, extra: dict[str, Any] | None = None
) -> None:
    body: dict[str, Any] = {"provider_config_key": args.integration, "syncs": list(args.syncs)}
    if args.connection_id is not None:
        body["connection_id"] = args.connection_id
    api.post(path, {**body, **(extra or {})})


def _names(args: argparse.Namespace) -> str:
    return "every sync" if "*" in args.syncs else ", ".join(args.syncs)


def _scope(args: argparse.Namespace) -> str:
    if args.connection_id is not None:
        return f"connection {args.connection_id!r} of {args.integration!r}"
    return f"every connection of {args.integration!r}"


def _when(value: str | None, option: str) -> str | None:
    return parse_when(value, option) if value else None


def _usage(message: str) -> BadInputError:
    return BadInputError(message)


def _counts(value: Any) -> str:
    """``{"Task": 3}`` or ``{"added": 1, ...}`` as ``Task=3`` / ``added=1 ...``."""
    if not isinstance(value, dict) or not value:
        return "-"
    return " ".join(f"{key}={value[key]}" for key in value)


def _runs(event: dict[str, Any]) -> str:
    """The runs an event caused, ``acme/tasks success, beta/tasks error`` (or their count)."""
    runs = event.get("runs")
    if isinstance(runs, list):
        return (
            ", ".join(
                f"{run.get('connection_id')}/{run.get('sync_name')} {run.get('state')}"
                for run in runs
                if isinstance(run, dict)
            )
            or "none"
        )
    count = event.get("runs_count")
    return "-" if count is None else str(count)
