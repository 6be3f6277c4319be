"""Console page: Notifications (placeholder of the skeleton; the page is filled in next)."""

from __future__ import annotations

from ingress.console.blueprint import bp, page

__all__ = ["notifications"]


@bp.get("/notifications")
def notifications() -> str:
    """The Notifications page."""
    return page("notifications.html", title="Notifications", section="console.notifications")
