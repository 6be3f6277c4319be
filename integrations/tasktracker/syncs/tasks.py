"""Sync script of the example task tracker: polling plus real-time webhooks.

The poll sets ``ignore_if_modified_after`` so that a page it fetched before a webhook
landed cannot overwrite the newer record the webhook wrote meanwhile.
"""

from __future__ import annotations

from typing import Any


def to_task(raw: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": str(raw["id"]),
        "title": raw["title"],
        "status": raw["status"],
        "updated_at": raw["updated_at"],
        "assignee": raw.get("assignee"),
    }


def fetch_data(nango: Any) -> None:
    nango.set_merging_strategy({"strategy": "ignore_if_modified_after"}, "Task")
    params = {"limit": 100}
    if nango.last_sync_date is not None:
        params["updated_after"] = nango.last_sync_date.isoformat()
    for page in nango.paginate(endpoint="/tasks", params=params, response_path="tasks"):
        nango.batch_save([to_task(task) for task in page], "Task")


def on_webhook_payload_received(nango: Any, payload: dict[str, Any]) -> None:
    task_id = payload["task_id"]
    if payload.get("event") == "task.deleted":
        nango.batch_delete([{"id": str(task_id)}], "Task")
        return
    # The webhook says what changed; the API says what it is now (webhooks may arrive late).
    task = nango.get(endpoint=f"/tasks/{task_id}").json()
    nango.batch_save([to_task(task)], "Task")
