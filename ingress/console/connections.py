"""Console page: Connections (placeholder of the skeleton; the page is filled in next)."""

from __future__ import annotations

from ingress.console.blueprint import bp, page

__all__ = ["connections"]


@bp.get("/connections")
def connections() -> str:
    """The Connections page."""
    return page("connections.html", title="Connections", section="console.connections")
