"""The console's blueprint and the helpers every page module shares.

The page modules (``integrations``, ``connections``, ``settings``, ``webhooks``,
``notifications``) each add their views to :data:`bp`; ``ingress.console`` imports them all.
Keeping the blueprint here, not in the package's ``__init__``, lets a page module import it
without an import cycle.
"""

from __future__ import annotations

from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from flask import Blueprint, render_template

from ingress.console.auth import csrf_field, is_logged_in, register

__all__ = ["NAV", "bp", "hooksync_version", "page", "when"]

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/ui",
    template_folder="templates",
    static_folder="static",
)
# Log-in, log-out and the guard that asks for a session and a CSRF token before any view.
register(bp)

#: The top navigation: (endpoint, label), in display order.
NAV: tuple[tuple[str, str], ...] = (
    ("console.integrations", "Integrations"),
    ("console.connections", "Connections"),
    ("console.webhooks", "Webhooks"),
    ("console.notifications", "Notifications"),
    ("console.settings", "Settings"),
)


def hooksync_version() -> str:
    """The installed hooksync version (package metadata), or ``"unknown"`` from a bare tree."""
    try:
        return version("hooksync")
    except PackageNotFoundError:
        return "unknown"


def page(template: str, *, title: str, section: str | None = None, **values: Any) -> str:
    """Render ``console/<template>`` with its ``<title>`` and the nav entry to highlight.

    Args:
        template: The file name under ``templates/console/``.
        title: The page's ``<title>`` (and heading, where the template uses it).
        section: The nav endpoint shown as current (e.g. ``"console.connections"``).
        **values: The template's own values (escaped by Jinja when rendered).
    """
    return render_template(f"console/{template}", title=title, section=section, **values)


@bp.app_template_global()
def nav() -> tuple[tuple[str, str], ...]:
    """The nav entries, for the base layout."""
    return NAV


@bp.app_template_filter("when")
def when(value: datetime | None) -> str:
    """A time as ``2026-01-31 12:00:05 UTC`` (``—`` for none); naive times are UTC."""
    if value is None:
        return "—"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.context_processor
def _globals() -> dict[str, Any]:
    return {
        "csrf_field": csrf_field,
        "logged_in": is_logged_in(),
        "hooksync_version": hooksync_version(),
    }
