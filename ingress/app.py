"""The Flask app factory (``gunicorn 'ingress.app:create_app()'``).

Start-up, in this order: settings (``HOOKSYNC_*``), the integrations file (a bad nango.yaml
stops the process with its problems listed), then one connection to the database to refuse
an unmigrated one. After that, the webhook receiver never touches the database: a request
to ``/webhook/*`` needs only Redis.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify

from cache.context import AppContext
from cache.db import assert_migrated
from config.settings import load_settings
from ingress import (
    connections,
    console,
    integrations,
    logs,
    metrics,
    notifications,
    openapi,
    records,
    syncs,
    webhooks,
)
from ingress.errors import register_error_handlers
from ingress.proxy import TrustedProxyFix

__all__ = ["create_app"]

#: Request bodies above this are refused with 413 before any view reads them; the webhook
#: receiver applies the stricter ``HOOKSYNC_MAX_WEBHOOK_BYTES`` itself.
MAX_REQUEST_BYTES = 16 * 1024 * 1024


def create_app(ctx: AppContext | None = None, *, check_database: bool = True) -> Flask:
    """Build the web app.

    Args:
        ctx: The shared handles; built from the environment when None.
        check_database: Refuse to start against an unmigrated database (connects once).

    Raises:
        ConfigError: Bad settings, a bad integrations file, or an unmigrated database.
    """
    if ctx is None:
        ctx = AppContext(load_settings())
    # Load now, not on the first webhook: a broken nango.yaml must stop start-up.
    _ = ctx.integrations
    if check_database:
        assert_migrated(ctx.engine)

    app = Flask("ingress")
    app.config["MAX_CONTENT_LENGTH"] = max(MAX_REQUEST_BYTES, ctx.settings.max_webhook_bytes + 1)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["hooksync"] = ctx
    if ctx.settings.trusted_proxies:
        # X-Forwarded-* only from the listed proxies (ingress/proxy.py), so the URL a
        # URL-signing provider called is rebuilt and a client's own headers are ignored.
        app.wsgi_app = TrustedProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, ctx.settings.trusted_proxies
        )

    app.register_blueprint(webhooks.bp)
    app.register_blueprint(records.bp)
    app.register_blueprint(connections.bp)
    app.register_blueprint(syncs.bp)
    app.register_blueprint(notifications.bp)
    app.register_blueprint(integrations.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(metrics.bp)
    # The operator console under /ui (its session key is derived from the API key).
    console.init_app(app, ctx.settings.secret_key)
    register_error_handlers(app)
    logs.init_app(app)

    @app.get("/healthz")
    def healthz() -> Response:
        # Liveness only: no Redis or database call, so a load balancer probe costs nothing.
        return jsonify({"status": "ok"})

    return app
