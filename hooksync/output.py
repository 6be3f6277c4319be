"""What the operator commands print and the times they read; no I/O beyond the stream given.

Tables are aligned plain-text columns (no dependency, readable in any terminal and in a
log); ``--json`` prints the API's own answer instead. Times on the command line are
ISO-8601 (a value without a zone is UTC) or an age such as ``30m``, ``2h``, ``7d``
meaning that long ago.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

from config.errors import BadInputError

__all__ = ["cell", "parse_when", "print_json", "print_table", "short_time"]

#: An age on the command line: a number and a unit (``90s``, ``30m``, ``2h``, ``7d``).
_AGE = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}

#: Widest a table cell gets; longer values end in "…" (``--json`` shows them whole).
MAX_CELL = 60


def parse_when(value: str, option: str, *, now: datetime | None = None) -> str:
    """An ISO-8601 UTC time for the API from ``value`` (ISO-8601, or an age like ``2h``).

    Args:
        value: What the operator typed.
        option: The option it came from, for the error (``--since``).
        now: The present, for ages (default: the clock).

    Raises:
        BadInputError: Neither form; the message names the option and the value.
    """
    age = _AGE.match(value)
    if age:
        seconds = int(age.group(1)) * _UNIT_SECONDS[age.group(2)]
        when = (now or datetime.now(UTC)) - timedelta(seconds=seconds)
        return when.isoformat()
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise BadInputError(
            f"{option}: expected an ISO-8601 time like 2026-11-26T12:00:00Z or an age like "
            f"30m, 2h, 7d; got {value!r}",
            field=option,
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC).isoformat()
    except OverflowError:
        raise BadInputError(
            f"{option}: {value!r} is outside the years 1-9999 in UTC", field=option
        ) from None


def cell(value: Any, limit: int | None = MAX_CELL) -> str:
    """One value as a table cell: ``-`` for nothing, compact JSON for structures; cut at
    ``limit`` characters (None: whole)."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping | list):
        text = json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    else:
        text = str(value)
    text = " ".join(text.split())  # a newline or tab would break the columns
    return text if limit is None or len(text) <= limit else text[: limit - 1] + "…"


def short_time(value: Any) -> str:
    """An API timestamp as ``2026-11-26 12:00:00`` (UTC, to the second), else as given."""
    if not isinstance(value, str) or not value:
        return cell(value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return cell(value)
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(UTC)
    return parsed.strftime("%Y-%m-%d %H:%M:%S")


def print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    empty: str,
    stream: TextIO | None = None,
) -> None:
    """Aligned columns under a header; ``empty`` alone when there are no rows.

    Cells longer than ``MAX_CELL`` are cut, except in the last column.

    Args:
        headers: Column titles.
        rows: The cells, already formatted or formatted here by ``cell``.
        empty: The line printed instead of a table with no rows.
        stream: Where to write (default stdout).
    """
    out = stream or sys.stdout
    if not rows:
        print(empty, file=out)
        return
    # The last column is never cut: nothing to its right needs aligning.
    last = len(headers) - 1
    cells = [
        [cell(value, None if index == last else MAX_CELL) for index, value in enumerate(row)]
        for row in rows
    ]
    widths = [
        max(len(headers[index]), *(len(row[index]) for row in cells))
        for index in range(len(headers))
    ]
    for line in [list(headers), *cells]:
        print(
            "  ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip(),
            file=out,
        )


def print_json(value: Any, stream: TextIO | None = None) -> None:
    """``value`` as indented JSON, keys in a stable order."""
    print(json.dumps(value, indent=2, sort_keys=True), file=stream or sys.stdout)
