"""What an external webhook may hold, and what of its headers is kept: pure, no I/O.

One definition serves both sides (ARCHITECTURE.md §6): the receiver refuses with a 400 what
this module refuses, and the worker applies the same check to an inbox entry or a stored
event it routes or replays (rows stored before the check existed), so they never disagree.

* **Payload** (``check_payload``): containers nested at most ``MAX_DEPTH`` levels, and no
  lone UTF-16 surrogate (``"\\ud800"`` as a JSON escape) in any string or key. Python's
  ``json`` accepts both, but a deep document fails later (the database driver, or
  decoding a stored run, raise ``RecursionError`` near 1,000 levels) and a lone surrogate
  cannot be encoded as UTF-8 when a run is stored or a script logs it. Real provider
  payloads nest a dozen levels at most; 64 leaves ample room.
* **Headers** (``redact_headers``): every header whose name looks like a credential (holds
  ``key``, ``token``, ``secret``, ``auth``, ``password``, ``session``, ``cookie`` or
  ``credential``) is stored and shown as ``[redacted]``, except the ones routing reads
  (``keep``). Signature headers are a MAC of the body, not a secret, and none of the
  presets' names matches the pattern.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from config.errors import BadInputError

__all__ = [
    "MAX_DEPTH",
    "REDACTED",
    "check_payload",
    "is_credential_header",
    "json_path",
    "redact_headers",
]

#: The deepest nesting of arrays and objects a webhook body may have (the root is level 1).
MAX_DEPTH = 64
#: What a redacted header's value reads.
REDACTED = "[redacted]"
#: Header names holding any of these words are credentials (compared lower-cased).
_CREDENTIAL_WORDS = re.compile(r"key|token|secret|auth|passw|session|cookie|credential")
#: A path shown in an error is cut after this many characters.
_MAX_SHOWN_PATH = 160
#: A plain key is shown as ``.name``; any other as ``["..."]``.
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


def check_payload(document: Any, *, max_depth: int = MAX_DEPTH, where: str = "body") -> None:
    """Refuse a parsed JSON document nested too deeply or holding a lone surrogate.

    Iterative, so a document deep enough to exhaust Python's stack is refused, not crashed
    on.

    Args:
        document: What ``json.loads`` returned.
        max_depth: The deepest nesting allowed; the root container is level 1.
        where: What the message calls the document (``body``, ``form field 'payload'``).

    Raises:
        BadInputError: code ``invalid_body``; the message names the problem and its JSON
            path, e.g. ``body: nested deeper than 64 levels at $.a[0]``.
    """
    # (value, depth of its container, path of the value) for every value still to look at.
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(document, 0, ())]
    while stack:
        value, depth, path = stack.pop()
        if isinstance(value, str):
            _check_text(value, path, where, in_key=False)
        elif isinstance(value, dict | list):
            if depth + 1 > max_depth:
                raise BadInputError(
                    f"{where}: nested deeper than {max_depth} levels at {json_path(path)}",
                    code="invalid_body",
                    field="body",
                )
            if isinstance(value, dict):
                for key, item in value.items():
                    _check_text(str(key), (*path, str(key)), where, in_key=True)
                    stack.append((item, depth + 1, (*path, str(key))))
            else:
                stack.extend((item, depth + 1, (*path, i)) for i, item in enumerate(value))


def json_path(path: Iterable[str | int]) -> str:
    """``$.a[0]["b c"]`` for the keys and indexes ``("a", 0, "b c")``, cut when long."""
    parts = ["$"]
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif _PLAIN_KEY.fullmatch(part):
            parts.append(f".{part}")
        else:
            shown = _escape(part[:40]) + ("..." if len(part) > 40 else "")
            parts.append(f'["{shown}"]')
    text = "".join(parts)
    return text if len(text) <= _MAX_SHOWN_PATH else text[:_MAX_SHOWN_PATH] + "..."


def is_credential_header(name: str, keep: Iterable[str] = ()) -> bool:
    """Whether header ``name`` (any case) looks like a credential and is not in ``keep``."""
    lowered = name.lower()
    if lowered in {kept.lower() for kept in keep}:
        return False
    return _CREDENTIAL_WORDS.search(lowered) is not None


def redact_headers(headers: Mapping[str, str], keep: Iterable[str] = ()) -> dict[str, str]:
    """``headers`` with every credential-like value replaced by ``[redacted]``.

    Args:
        headers: Header names to values (names kept as given).
        keep: Header names (any case) to keep verbatim although they look like credentials:
            the ones routing reads (an event type or delivery id header).
    """
    kept = frozenset(name.lower() for name in keep)
    return {
        name: REDACTED if is_credential_header(name, kept) else value
        for name, value in headers.items()
    }


def _check_text(text: str, path: tuple[str | int, ...], where: str, *, in_key: bool) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        char = text[error.start]
        place = f"a key at {json_path(path)}" if in_key else json_path(path)
        raise BadInputError(
            f"{where}: lone surrogate \\u{ord(char):04x} in {place}; a JSON string must "
            "hold whole Unicode characters (a high surrogate followed by a low one)",
            code="invalid_body",
            field="body",
        ) from None


def _escape(text: str) -> str:
    """``text`` with quotes, backslashes, controls and surrogates escaped for a message."""
    return "".join(
        c
        if c.isprintable() and c not in '"\\' and not 0xD800 <= ord(c) <= 0xDFFF
        else f"\\u{ord(c):04x}"
        for c in text
    )
