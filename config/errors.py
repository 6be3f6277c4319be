"""The error hierarchy: one root, a few children that say what the caller should do."""

from __future__ import annotations

__all__ = [
    "BadInputError",
    "ConfigError",
    "FatalError",
    "HooksyncError",
    "RetriableError",
]


class HooksyncError(Exception):
    """Root of every error hooksync raises on purpose."""


class BadInputError(HooksyncError):
    """Input from outside (a request, a webhook, a script's records) is malformed.

    Never retried: the same input fails the same way. The message names the field and
    shows the value.
    """

    def __init__(self, message: str, *, code: str = "invalid_request", field: str | None = None):
        super().__init__(message)
        self.code = code
        self.field = field


class ConfigError(HooksyncError):
    """Settings or the integrations file are invalid; start-up stops with this one line."""


class RetriableError(HooksyncError):
    """A transient failure (network, 429, 5xx, lock timeout): the work may be tried again."""


class FatalError(HooksyncError):
    """A permanent failure (4xx from an external API, a script bug): retrying cannot help."""
