"""Console: Settings — the Standard Webhooks secret to copy into the app, the app URLs, the
version.

The ``whsec_…`` secret is the one ``GET /webhooks/signing-secret`` returns (the issue asks
for it here); the app URLs are shown redacted (``workers.app_webhooks.redact_url``), since a URL
may carry a token in its query or user info.
"""

from __future__ import annotations

from flask import make_response
from werkzeug.wrappers import Response

from ingress.auth import current_context
from ingress.console.blueprint import bp, hooksync_version, page
from ingress.integrations import SIGNATURE_HEADER, signing_secrets
from workers.app_webhooks import redact_url

__all__ = ["settings"]


@bp.get("/settings")
def settings() -> Response:
    """The Settings page (never cached: it shows a secret)."""
    config = current_context().settings
    response = make_response(
        page(
            "settings.html",
            title="Settings",
            section="console.settings",
            secrets=signing_secrets(config.webhook_signing_keys),
            header=SIGNATURE_HEADER,
            app_urls=[redact_url(url) for url in config.app_webhook_urls],
            version=hooksync_version(),
        )
    )
    response.headers["Cache-Control"] = "no-store"
    return response
