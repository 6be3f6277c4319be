"""Reading typed values out of ``nango.yaml``, shared by the loader and the provider parser.

A reader never raises for what the file says: a value of the wrong type is recorded in the
``report`` (with its path) and the reader returns the default, so one pass lists every
mistake in the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, cast

__all__ = ["ProblemReport", "read_bool", "read_optional_str"]


class ProblemReport(Protocol):
    """Where problems go; the loader's collector, so every problem lands in one list."""

    def error(self, code: str, path: str, message: str) -> None: ...

    def warn(self, code: str, path: str, message: str) -> None: ...

    def expect(
        self, value: object, kinds: type | tuple[type, ...], path: str, expected: str
    ) -> bool: ...

    def unknown_keys(self, raw: Mapping[Any, Any], known: frozenset[str], path: str) -> None: ...


def read_optional_str(raw: object, path: str, report: ProblemReport) -> str | None:
    """``raw`` if it is a string; None if it is absent or (recorded as a problem) not one."""
    if raw is None:
        return None
    return cast(str, raw) if report.expect(raw, str, path, "a string") else None


def read_bool(
    body: Mapping[Any, Any], key: str, default: bool, path: str, report: ProblemReport
) -> bool:
    """``body[key]`` if it is true or false; ``default`` if absent or (recorded) not a bool."""
    raw = body.get(key)
    if raw is None:
        return default
    if report.expect(raw, bool, f"{path}.{key}", "true or false"):
        return cast(bool, raw)
    return default
