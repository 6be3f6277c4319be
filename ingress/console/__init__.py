"""The operator console under ``/ui`` (ARCHITECTURE.md §9): server-rendered Flask + Jinja.

Log in with the API key; pages: Integrations (› Endpoints), Connections, Webhooks,
Notifications, Settings. No front-end build step and no external asset: the templates and
one CSS file ship inside the package. Each page's views live in their own module, which adds
them to :data:`bp` when imported here.
"""

from __future__ import annotations

from flask import Flask, redirect, url_for
from werkzeug.wrappers import Response

from ingress.console import (  # noqa: F401  (imported for the views they add to bp)
    connections,
    integrations,
    notifications,
    settings,
    webhooks,
)
from ingress.console.auth import configure_sessions
from ingress.console.blueprint import bp

__all__ = ["bp", "init_app"]


@bp.get("/")
def home() -> Response:
    """The console's front page: the integrations list."""
    return redirect(url_for("console.integrations"))


def init_app(app: Flask, api_key: str) -> None:
    """Register the console on ``app``: its blueprint and its session cookie settings."""
    configure_sessions(app, api_key)
    app.register_blueprint(bp)
