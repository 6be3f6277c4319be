"""A small task-tracker API: what the example integration syncs from.

It serves the task list for polling (``GET /tasks``, cursor-paginated, ``updated_after``
for incremental runs) and single tasks, and — like HubSpot or GitHub — sends a signed
webhook to hooksync whenever a task changes. A change can also be made *silently* (the
webhook "lost"), which is what the periodic poll exists to reconcile.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import requests
from flask import Flask, abort, jsonify, request

__all__ = ["FakeTracker", "WebhookSent"]


@dataclass(frozen=True)
class WebhookSent:
    event: str
    task_id: str
    delivery_id: str
    sent_at: float  # time.monotonic() when the POST left
    status: int
    ack_ms: float
    body: dict[str, Any]


class FakeTracker:
    """The simulated external API. Thread-safe; run it with ``demo.http_thread.ServerThread``."""

    def __init__(self, *, api_token: str, webhook_secret: str, workspace_id: str) -> None:
        self.api_token = api_token
        self.webhook_secret = webhook_secret
        self.workspace_id = workspace_id
        self.webhook_url: str | None = None
        self._tasks: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        # Closed (cleared) to make GET /tasks take its snapshot and then wait: lets a test
        # land a webhook between a poll's fetch and its save.
        self._list_gate = threading.Event()
        self._list_gate.set()
        self.list_snapshots = threading.Semaphore(0)
        self.requests_seen: list[str] = []
        self.app = self._make_app()

    # -- state -------------------------------------------------------------------------

    def create_task(self, title: str, *, notify: bool = True, **fields: Any) -> dict[str, Any]:
        with self._lock:
            task_id = f"T-{next(self._ids)}"
            task = {
                "id": task_id,
                "title": title,
                "status": "todo",
                "assignee": None,
                "updated_at": _now_iso(),
                **fields,
            }
            self._tasks[task_id] = task
        if notify:
            self.send_webhook("task.created", task_id)
        return dict(task)

    def update_task(self, task_id: str, *, notify: bool = True, **changes: Any) -> dict[str, Any]:
        with self._lock:
            task = self._tasks[task_id]
            task.update(changes)
            task["updated_at"] = _now_iso()
            snapshot = dict(task)
        if notify:
            self.send_webhook("task.updated", task_id)
        return snapshot

    def delete_task(self, task_id: str, *, notify: bool = True) -> None:
        with self._lock:
            del self._tasks[task_id]
        if notify:
            self.send_webhook("task.deleted", task_id)

    def get_task(self, task_id: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._tasks[task_id])

    def hold_list_requests(self) -> None:
        self._list_gate.clear()

    def release_list_requests(self) -> None:
        self._list_gate.set()

    # -- webhooks ----------------------------------------------------------------------

    def sign(self, body: bytes) -> str:
        digest = hmac.new(self.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        return f"sha256={digest}"

    def send_webhook(
        self, event: str, task_id: str, *, signature: str | None = None
    ) -> WebhookSent:
        if not self.webhook_url:
            raise RuntimeError("webhook_url is not set: where should webhooks go?")
        delivery_id = uuid.uuid4().hex
        payload = {
            "event": event,
            "task_id": task_id,
            "workspace_id": self.workspace_id,
            "occurred_at": _now_iso(),
        }
        body = json.dumps(payload).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Tracker-Event": event,
            "X-Tracker-Delivery": delivery_id,
            "X-Tracker-Signature": signature or self.sign(body),
        }
        sent_at = time.monotonic()
        response = requests.post(self.webhook_url, data=body, headers=headers, timeout=10)
        ack_ms = (time.monotonic() - sent_at) * 1000
        return WebhookSent(
            event, task_id, delivery_id, sent_at, response.status_code, ack_ms, payload
        )

    # -- HTTP API ----------------------------------------------------------------------

    def _make_app(self) -> Flask:
        app = Flask("fake_tracker")

        @app.before_request
        def _authenticate() -> None:
            self.requests_seen.append(f"{request.method} {request.path}")
            if request.headers.get("Authorization") != f"Bearer {self.api_token}":
                abort(401)

        @app.get("/tasks")
        def list_tasks() -> Any:
            limit = int(request.args.get("limit", 100))
            start = int(request.args.get("cursor", 0))
            updated_after = request.args.get("updated_after")
            with self._lock:
                tasks = sorted(self._tasks.values(), key=lambda t: int(t["id"][2:]))
                if updated_after:
                    tasks = [t for t in tasks if t["updated_at"] > updated_after]
                page = [dict(t) for t in tasks[start : start + limit]]
                more = start + limit < len(tasks)
            self.list_snapshots.release()
            self._list_gate.wait(60)
            return jsonify({"tasks": page, "next_cursor": str(start + limit) if more else None})

        @app.get("/tasks/<task_id>")
        def show_task(task_id: str) -> Any:
            with self._lock:
                task = self._tasks.get(task_id)
            if task is None:
                abort(404)
            return jsonify(task)

        return app


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
