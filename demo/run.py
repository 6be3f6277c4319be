"""`make demo`: watch one webhook after another flow through a real hooksync deployment.

Starts web (gunicorn), a Celery worker, Celery beat, the embedded Redis and SQLite, plus a
simulated task-tracker API and an app receiver, then narrates each step with its latency:
webhook sent → accepted → records changed → app notified, and the periodic poll
reconciling a change whose webhook was lost. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import argparse
import itertools
import os
import secrets
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import requests

from demo.app_receiver import AppReceiver, Received
from demo.fake_tracker import FakeTracker
from demo.http_thread import ServerThread
from demo.stack import REPO, Stack

BOLD, DIM, GREEN, YELLOW, CYAN, RESET = (
    ("\033[1m", "\033[2m", "\033[32m", "\033[33m", "\033[36m", "\033[0m")
    if sys.stdout.isatty()
    else ("",) * 6
)


class Narrator:
    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        print(f"{DIM}[{time.monotonic() - self.started:6.1f}s]{RESET} {text}", flush=True)

    def more(self, text: str) -> None:
        print(f"          {text}", flush=True)


class Demo:
    def __init__(self, port: int, var_dir: Path) -> None:
        self.say = Narrator()
        self.api_key = secrets.token_urlsafe(16)
        signing_key = secrets.token_urlsafe(16)
        self.tracker = FakeTracker(
            api_token=secrets.token_urlsafe(16),
            webhook_secret=secrets.token_urlsafe(16),
            workspace_id="ws_acme",
        )
        self.receiver = AppReceiver(signing_key)
        self.tracker_server = ServerThread(self.tracker.app).start()
        self.receiver_server = ServerThread(self.receiver.app).start()
        env = {
            "HOOKSYNC_VAR_DIR": str(var_dir),
            "HOOKSYNC_PORT": str(port),
            "HOOKSYNC_SECRET_KEY": self.api_key,
            "HOOKSYNC_WEBHOOK_SIGNING_KEY": signing_key,
            "HOOKSYNC_APP_WEBHOOK_URLS": f"{self.receiver_server.url}/hooks/hooksync",
            "HOOKSYNC_TICK_SECONDS": "2",
            "TASKTRACKER_BASE_URL": self.tracker_server.url,
            "TASKTRACKER_WEBHOOK_SECRET": self.tracker.webhook_secret,
        }
        for name in ("HOOKSYNC_DATABASE_URL", "HOOKSYNC_REDIS_URL"):
            env[name] = os.environ.get(name, "")
        self.stack = Stack(env, log_dir=var_dir / "logs")
        self.tracker.webhook_url = f"{self.stack.base_url}/webhook/tasktracker"
        self.cursor: str | None = None
        self.lost: list[tuple[str, float]] = []  # (task id, when) of changes with no webhook
        self.renames = 0

    # -- the story -----------------------------------------------------------------------

    def run(self, duration: float | None) -> None:
        say = self.say
        say.say(f"{BOLD}hooksync demo{RESET}: web, worker and beat as real processes; "
                f"embedded Redis; database {self._database()}")  # fmt: skip
        say.more(f"fake task tracker API  {self.tracker_server.url}")
        say.more(f"your app's webhook URL {self.receiver_server.url}/hooks/hooksync")
        say.more(f"logs                   {self.stack.log_dir}")
        for title in ("Write the launch post", "Fix login redirect", "Plan Q3 roadmap"):
            self.tracker.create_task(title, notify=False)
        self.stack.start()
        say.say(f"hooksync is up at {self.stack.base_url} (web, worker, beat running)")

        self._create_connection()
        self._wait_and_show(lambda b: b["syncType"] == "INITIAL", "initial sync", None)

        deadline = None if duration is None else time.monotonic() + duration
        for step in itertools.cycle(self._script()):
            if deadline is not None and time.monotonic() > deadline:
                break
            step()
            self._idle(4.0)

    def _script(self) -> list[Any]:
        tracker = self.tracker
        return [
            lambda: self._webhook_step("task.updated", "T-2", lambda: tracker.update_task(
                "T-2", status="doing", notify=False), "T-2 moved to 'doing'"),
            lambda: self._webhook_step("task.created", None, lambda: tracker.create_task(
                "Answer support ticket", notify=False), "new task"),
            lambda: self._lost_step("T-1", "T-1 renamed — its webhook is lost"),
            lambda: self._webhook_step("task.updated", "T-3", lambda: tracker.update_task(
                "T-3", assignee="maya", notify=False), "T-3 assigned to maya"),
            lambda: self._webhook_step("task.updated", "T-2", lambda: tracker.update_task(
                "T-2", status="done", notify=False), "T-2 done"),
        ]  # fmt: skip

    def _webhook_step(self, event: str, task_id: str | None, change: Any, what: str) -> None:
        task = change()
        task_id = task_id or task["id"]
        self.say.say(f"{CYAN}external API{RESET}: {what} → sends webhook {event} ({task_id})")
        sent = self.tracker.send_webhook(event, task_id)
        verdict = GREEN if sent.status == 202 else YELLOW
        self.say.more(f"→ hooksync answered {verdict}{sent.status}{RESET} in {sent.ack_ms:.0f} ms")
        self._wait_and_show(lambda b: b["syncType"] == "WEBHOOK", "webhook run", sent.sent_at)

    def _lost_step(self, task_id: str, what: str) -> None:
        self.renames += 1
        title = f"Write the launch post (v{self.renames + 1})"
        self.tracker.update_task(task_id, title=title, notify=False)
        if all(pending != task_id for pending, _ in self.lost):
            self.lost.append((task_id, time.monotonic()))
        self.say.say(f"{YELLOW}external API{RESET}: {what}; the periodic poll will reconcile it")

    # -- hooksync's side -----------------------------------------------------------------

    def _create_connection(self) -> None:
        body = {
            "provider_config_key": "tasktracker",
            "connection_id": "acme",
            "credentials": {"type": "API_KEY", "api_key": self.tracker.api_token},
            "metadata": {"workspace_id": self.tracker.workspace_id},
        }
        response = requests.post(
            f"{self.stack.base_url}/connections", json=body, headers=self._auth(), timeout=10
        )
        response.raise_for_status()
        self.say.say("app: created connection 'acme' (POST /connections) → initial sync starts")

    def _wait_and_show(self, predicate: Any, what: str, since: float | None) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            item = self.receiver.next(timeout=0.5)
            if item is None:
                continue
            matched = predicate(item.body)
            self._show(item, since if matched else None)
            if matched:
                return
        self.say.more(f"{YELLOW}no notification for the {what} within 30 s; see logs{RESET}")

    def _idle(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            item = self.receiver.next(timeout=left)
            if item is not None:
                self._show(item, None)

    def _show(self, item: Received, since: float | None) -> None:
        body = item.body
        counts = body.get("responseResults") or {}
        summary = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("added", "updated", "deleted"))
        check = "signature ✓" if item.signature_ok else f"{YELLOW}signature ✗{RESET}"
        latency = (
            f" — {(item.received_at - since) * 1000:.0f} ms after the webhook" if since else ""
        )
        if not body.get("success", False):
            self.say.say(f"{YELLOW}app notified: {body['syncType']} run failed{RESET}: "
                         f"{body.get('error')}")  # fmt: skip
            return
        changed = sum(counts.get(k, 0) for k in ("added", "updated", "deleted"))
        if body["syncType"] == "INCREMENTAL" and not changed:
            self.say.say(f"{DIM}poll: periodic reconciliation ran, nothing was missed{RESET}")
            return
        self.say.say(f"{GREEN}app notified{RESET}: {body['syncType']} {body['model']}: "
                     f"{summary} ({check}){latency}")  # fmt: skip
        for record in self._read_changes():
            meta = record["_nango_metadata"]
            self.say.more(f"→ app reads /records: {record['id']} {record.get('title')!r} "
                          f"status={record.get('status')} assignee={record.get('assignee')} "
                          f"[{meta['last_action']}]")  # fmt: skip
            if body["syncType"] == "INCREMENTAL":
                for task_id, when in list(self.lost):
                    if task_id == record["id"]:
                        self.lost.remove((task_id, when))
                        late = time.monotonic() - when
                        self.say.more(f"{GREEN}→ poll reconciled the lost webhook "
                                      f"{late:.1f} s after the change{RESET}")  # fmt: skip

    def _read_changes(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        while True:
            params: dict[str, Any] = {"model": "Task", "limit": 100}
            if self.cursor:
                params["cursor"] = self.cursor
            response = requests.get(
                f"{self.stack.base_url}/records",
                params=params,
                headers={**self._auth(), "Connection-Id": "acme",
                         "Provider-Config-Key": "tasktracker"},
                timeout=10,
            )  # fmt: skip
            response.raise_for_status()
            page = response.json()
            records += page["records"]
            if page["records"]:
                self.cursor = page["records"][-1]["_nango_metadata"]["cursor"]
            if not page.get("next_cursor"):
                return records

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def _database(self) -> str:
        url = os.environ.get("HOOKSYNC_DATABASE_URL") or "SQLite"
        return url.split("@")[-1]

    def stop(self) -> None:
        self.say.say("stopping web, worker, beat and the embedded Redis…")
        self.stack.stop()
        self.tracker.release_list_requests()
        self.tracker_server.stop()
        self.receiver_server.stop()
        self.say.say("stopped; nothing left running")


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _stop_like_ctrl_c(_signum: int, _frame: Any) -> None:
    """SIGTERM (e.g. from a process manager) stops the demo the way Ctrl-C does."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    parser.add_argument("--port", type=int, default=int(os.environ.get("HOOKSYNC_PORT", 3003)))
    parser.add_argument("--var-dir", type=Path, default=REPO / "var" / "demo")
    args = parser.parse_args()
    port = args.port
    if not _port_is_free(port):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        print(f"port {args.port} is busy; using {port}", flush=True)
    var_dir = args.var_dir.resolve()
    shutil.rmtree(var_dir, ignore_errors=True)  # every demo starts from an empty cache
    signal.signal(signal.SIGTERM, _stop_like_ctrl_c)
    demo = Demo(port, var_dir)
    try:
        demo.run(args.duration)
    except KeyboardInterrupt:
        print()
    finally:
        demo.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
