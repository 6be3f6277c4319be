"""The bundled example integration (``integrations/``, a task tracker) as tests drive it."""

from __future__ import annotations

from typing import Any

#: What the example's nango.yaml reads from the environment when ``ctx.integrations`` is
#: first loaded, for tests that never call the tracker's API (nothing listens on port 9).
TASKTRACKER_ENV = {
    "TASKTRACKER_BASE_URL": "http://127.0.0.1:9",
    "TASKTRACKER_WEBHOOK_SECRET": "webhook-secret",
}


def task(task_id: int, title: str, updated_at: str = "2024-01-01T00:00:00Z") -> dict[str, Any]:
    """A task as the tracker's API returns it (``GET /tasks``, ``GET /tasks/<id>``)."""
    return {"id": task_id, "title": title, "status": "open", "updated_at": updated_at}
