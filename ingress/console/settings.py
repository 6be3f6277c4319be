"""Console page: Settings (placeholder of the skeleton; the page is filled in next)."""

from __future__ import annotations

from ingress.console.blueprint import bp, page

__all__ = ["settings"]


@bp.get("/settings")
def settings() -> str:
    """The Settings page."""
    return page("settings.html", title="Settings", section="console.settings")
