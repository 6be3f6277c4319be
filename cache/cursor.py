"""Opaque record cursors: a ``mod_seq`` plus a short HMAC, url-safe base64 (no I/O).

The MAC keeps clients from handing us made-up positions: a forged, truncated or edited
cursor is refused with ``invalid_cursor`` instead of silently paging from somewhere else.
Cursors carry no expiry; ``mod_seq`` never goes backwards, so an old cursor stays valid.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import re
from typing import Any

from config.errors import BadInputError

__all__ = ["decode_cursor", "encode_cursor"]

_VERSION = b"\x01"
#: Truncated HMAC-SHA256: enough that guessing a valid cursor is hopeless.
_MAC_BYTES = 12
_MAX_SEQ_BYTES = 8
_DOMAIN = b"hooksync-cursor-v1:"
_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


_BLOCK = 64  # sha256's block size
_INNER_PAD = bytes(byte ^ 0x36 for byte in range(256))
_OUTER_PAD = bytes(byte ^ 0x5C for byte in range(256))


@functools.lru_cache(maxsize=8)
def _keyed(key: str) -> tuple[Any, Any]:
    """HMAC-SHA256 (RFC 2104) states with the key and domain already absorbed.

    Every record of a page carries a cursor; ``hmac.digest`` re-keys on each call and
    costs four times as much as copying these two states.
    """
    secret = key.encode("utf-8")
    if len(secret) > _BLOCK:
        secret = hashlib.sha256(secret).digest()
    secret = secret.ljust(_BLOCK, b"\0")
    inner = hashlib.sha256(secret.translate(_INNER_PAD))
    inner.update(_DOMAIN)
    return inner, hashlib.sha256(secret.translate(_OUTER_PAD))


def _mac(key: str, body: bytes) -> bytes:
    inner_state, outer_state = _keyed(key)
    inner = inner_state.copy()
    inner.update(body)
    outer = outer_state.copy()
    outer.update(inner.digest())
    return outer.digest()[:_MAC_BYTES]


def encode_cursor(mod_seq: int, key: str) -> str:
    """The cursor of position ``mod_seq`` (records after it come next)."""
    if isinstance(mod_seq, bool) or not isinstance(mod_seq, int) or mod_seq < 0:
        raise ValueError(f"mod_seq must be a non-negative int, got {mod_seq!r}")
    body = _VERSION + mod_seq.to_bytes(max(1, (mod_seq.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(body + _mac(key, body)).rstrip(b"=").decode("ascii")


def decode_cursor(text: str, key: str) -> int:
    """The ``mod_seq`` of a cursor made by ``encode_cursor`` with the same key.

    Raises:
        BadInputError: code ``invalid_cursor`` for anything this server did not issue.
    """
    raw = _decode(text) if isinstance(text, str) else None
    if (
        raw is None
        or len(raw) < 2 + _MAC_BYTES
        or len(raw) > 1 + _MAX_SEQ_BYTES + _MAC_BYTES
        or raw[:1] != _VERSION
    ):
        raise _invalid(text)
    body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(key, body)):
        raise _invalid(text)
    return int.from_bytes(body[1:], "big")


def _decode(text: str) -> bytes | None:
    if not 0 < len(text) <= 64 or not _ALPHABET.fullmatch(text):
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    # Refuse non-canonical spellings (stray trailing bits) so one position has one cursor.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != text:
        return None
    return raw


def _invalid(text: object) -> BadInputError:
    shown = repr(text) if len(repr(text)) <= 80 else repr(text)[:77] + "..."
    return BadInputError(
        f"cursor {shown} is not a valid cursor: pass back a next_cursor or "
        "_nango_metadata.cursor exactly as this server returned it, or omit it to start over",
        code="invalid_cursor",
        field="cursor",
    )
