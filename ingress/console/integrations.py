"""Console page: Integrations (placeholder of the skeleton; the page is filled in next)."""

from __future__ import annotations

from ingress.console.blueprint import bp, page

__all__ = ["integrations"]


@bp.get("/integrations")
def integrations() -> str:
    """The Integrations page."""
    return page("integrations.html", title="Integrations", section="console.integrations")
