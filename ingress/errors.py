"""JSON error responses: one shape, ``{"error": {"code", "message"}}``, for every failure.

Statuses are chosen in one place (``status_for``) from the error's code, so a view raises
``BadInputError(..., code="unknown_connection")`` and never picks a status itself.
"""

from __future__ import annotations

import logging
import re

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from config.errors import BadInputError, RetriableError

__all__ = ["error_response", "register_error_handlers", "status_for"]

log = logging.getLogger(__name__)

#: Error codes that are not a plain 400.
_STATUS_BY_CODE = {
    "unauthorized": 401,
    "invalid_signature": 401,
    "invalid_timestamp": 401,
    "stale_timestamp": 401,
    "webhook_secret_missing": 401,
    "not_found": 404,
    "unknown_integration": 404,
    "unknown_connection": 404,
    "unknown_event": 404,
    "unknown_notification": 404,
    "unknown_endpoint": 404,
    "connection_exists": 409,
    "conflict": 409,
    "payload_too_large": 413,
}

#: Seconds a client should wait after a 503 (Redis or the database briefly unavailable).
RETRY_AFTER_SECONDS = 5


def status_for(error: BadInputError) -> int:
    """The HTTP status of a bad-input error: by its code, else 400."""
    return _STATUS_BY_CODE.get(error.code, 400)


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[Response, int]:
    """``({"error": {"code", "message"[, "field"]}}, status)`` for a view to return."""
    error: dict[str, str] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    response = jsonify({"error": error})
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response, status


def register_error_handlers(app: Flask) -> None:
    """Make every error JSON; a 500 never shows the exception to the client."""

    @app.errorhandler(BadInputError)
    def _bad_input(error: BadInputError) -> tuple[Response, int]:
        return error_response(status_for(error), error.code, str(error), field=error.field)

    @app.errorhandler(RetriableError)
    def _retriable(error: RetriableError) -> tuple[Response, int]:
        log.warning("request failed with a retriable error: %s", error, exc_info=True)
        return error_response(
            503,
            "unavailable",
            "a backing service is temporarily unavailable; retry shortly",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> tuple[Response, int]:
        status = error.code or 500
        headers = {}
        if status == 405:
            # Keep the Allow header werkzeug computed from the routes.
            allow = error.get_response().headers.get("Allow")
            if allow:
                headers["Allow"] = allow
        return error_response(
            status, _code_of(error), error.description or error.name, headers=headers
        )

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> tuple[Response, int]:
        if isinstance(error, HTTPException):  # pragma: no cover - routed above
            return _http(error)
        log.exception("unhandled error")
        return error_response(
            500, "internal_error", "internal server error; the details are in the server log"
        )


def _code_of(error: HTTPException) -> str:
    return re.sub(r"[^a-z0-9]+", "_", (error.name or "error").lower()).strip("_")
