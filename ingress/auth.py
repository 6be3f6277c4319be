"""Request-side access to the app context, and the API key check.

Every endpoint but ``/webhook/*`` and ``/healthz`` requires ``Authorization: Bearer <key>``
where the key is ``HOOKSYNC_SECRET_KEY`` (ARCHITECTURE.md §7); the comparison is constant-time and
no response or log line ever echoes the key that was sent.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import current_app, request

from cache.context import AppContext
from ingress.errors import error_response

__all__ = ["current_context", "has_valid_api_key", "require_api_key"]

F = TypeVar("F", bound=Callable[..., Any])


def current_context() -> AppContext:
    """The ``AppContext`` the app was built with (views only; services take it as argument)."""
    return cast(AppContext, current_app.extensions["hooksync"])


def has_valid_api_key(authorization: str | None, secret_key: str) -> bool:
    """True when ``authorization`` is ``Bearer <secret_key>`` (constant-time compare)."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    # compare_digest on bytes: constant time for equal lengths, and never raises on
    # non-ASCII input the way str comparison would.
    return hmac.compare_digest(token.strip().encode(), secret_key.encode())


def require_api_key(view: F) -> F:
    """Decorator: answer 401 JSON unless the request carries the bearer API key."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        settings = current_context().settings
        if not has_valid_api_key(request.headers.get("Authorization"), settings.secret_key):
            message = (
                "missing Authorization header; send 'Authorization: Bearer <HOOKSYNC_SECRET_KEY>'"
                if not request.headers.get("Authorization")
                else "invalid API key; send 'Authorization: Bearer <HOOKSYNC_SECRET_KEY>'"
            )
            response, status = error_response(401, "unauthorized", message)
            response.headers["WWW-Authenticate"] = "Bearer"
            return response, status
        return view(*args, **kwargs)

    return cast(F, wrapper)
