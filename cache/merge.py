"""Merge rules of the records cache (ARCHITECTURE.md §5): pure functions, no I/O.

The store (``cache.store``) reads the stored state of a batch's records, asks ``decide`` what
to do with each one and writes the outcome. Everything that decides — canonical JSON, hashes,
validation, deep merge, the merging strategies — lives here so it can be tested without a
database.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from config.errors import BadInputError

__all__ = [
    "DEFAULT_MAX_RECORD_BYTES",
    "MAX_EXTERNAL_ID_LENGTH",
    "Action",
    "MergeStrategy",
    "Operation",
    "PreparedRecord",
    "StoredState",
    "canonical_json",
    "decide",
    "deep_merge",
    "hash_payload",
    "is_older",
    "parse_strategy",
    "split_duplicates",
    "validate_batch",
    "validate_model",
]

#: A record whose canonical JSON is larger than this (in UTF-8 bytes) rejects its batch.
DEFAULT_MAX_RECORD_BYTES = 1024 * 1024
#: ``records.external_id`` is a String(255).
MAX_EXTERNAL_ID_LENGTH = 255

_STRATEGIES = ("override", "ignore_if_modified_after", "newest_wins")
#: One encoder for every record (``json.dumps`` with options builds a new one per call).
_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
)


def canonical_json(obj: Any) -> str:
    """Serialise ``obj`` with sorted keys and compact separators (the hashed form).

    Raises:
        ValueError: NaN or infinity somewhere in ``obj``.
        TypeError: a value JSON cannot represent.
    """
    return _ENCODER.encode(obj)


def hash_payload(payload: str) -> str:
    """sha256 hex of a canonical JSON text."""
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def deep_merge(old: Any, new: Any) -> Any:
    """Merge ``new`` into ``old``: objects merge key by key, anything else is replaced.

    Arrays are replaced, not concatenated (Nango's ``batchUpdate``). Neither input is mutated.
    """
    if not isinstance(old, dict) or not isinstance(new, dict):
        return new
    merged = dict(old)
    for key, value in new.items():
        merged[key] = deep_merge(merged[key], value) if key in merged else value
    return merged


class Operation(StrEnum):
    SAVE = "save"
    UPDATE = "update"
    DELETE = "delete"


class Action(StrEnum):
    """What the store does with one incoming record, and how it is counted."""

    INSERT = "insert"  # new id: added
    UNDELETE = "undelete"  # a deleted record saved again: added, first_seen_at reset
    UPDATE = "update"  # the hash changed: updated
    DELETE = "delete"  # a live record soft-deleted: deleted
    UNCHANGED = "unchanged"  # same hash, live: no write at all
    SKIP = "skip"  # the merging strategy kept the stored record: no write, counted nowhere
    IGNORE = "ignore"  # update/delete of an unknown or deleted record: counted nowhere


@dataclass(frozen=True)
class MergeStrategy:
    """A model's merging strategy for one execution (``set_merging_strategy``)."""

    name: str = "override"
    #: The payload field compared by ``newest_wins``; None for the other strategies.
    field: str | None = None

    def __post_init__(self) -> None:
        if self.name not in _STRATEGIES:
            raise BadInputError(
                f"merging strategy {self.name!r} is unknown; use one of "
                + ", ".join(repr(name) for name in _STRATEGIES),
                field="strategy",
            )
        if self.name == "newest_wins":
            if not isinstance(self.field, str) or not self.field:
                raise BadInputError(
                    f"merging strategy 'newest_wins' needs a non-empty string 'field' naming "
                    f"the record's timestamp or version field, got {self.field!r}, e.g. "
                    '{"strategy": "newest_wins", "field": "updated_at"}',
                    field="field",
                )
        elif self.field is not None:
            raise BadInputError(
                f"merging strategy {self.name!r} takes no 'field' (got {self.field!r}); "
                "only 'newest_wins' compares a field",
                field="field",
            )

    @property
    def needs_stored_payload(self) -> bool:
        return self.name == "newest_wins"


def parse_strategy(obj: Any) -> MergeStrategy:
    """Read a strategy as scripts give it: ``{"strategy": name[, "field": f]}`` or a name.

    Raises:
        BadInputError: naming the value and the accepted forms.
    """
    if isinstance(obj, MergeStrategy):
        return obj
    if isinstance(obj, str):
        return MergeStrategy(obj)
    if not isinstance(obj, Mapping):
        raise BadInputError(
            f"merging strategy must be a dict like {{'strategy': 'override'}} or a strategy "
            f"name, got {obj!r}",
            field="strategy",
        )
    unknown = sorted(str(key) for key in obj if key not in ("strategy", "field"))
    if unknown:
        raise BadInputError(
            f"merging strategy {dict(obj)!r} has unknown key(s) {', '.join(unknown)}; "
            "only 'strategy' and 'field' are accepted",
            field="strategy",
        )
    name = obj.get("strategy")
    if not isinstance(name, str):
        raise BadInputError(
            f"merging strategy {dict(obj)!r} needs 'strategy' to be one of "
            + ", ".join(repr(name) for name in _STRATEGIES)
            + f", got {name!r}",
            field="strategy",
        )
    return MergeStrategy(name, obj.get("field"))


@dataclass(frozen=True, slots=True)
class PreparedRecord:
    """One validated incoming record."""

    index: int  # position in the batch, for messages
    external_id: str
    record: dict[str, Any]
    payload: str  # canonical JSON
    data_hash: str


def validate_model(model: Any) -> str:
    if not isinstance(model, str) or not model.strip():
        raise BadInputError(f"model must be a non-empty string, got {model!r}", field="model")
    if len(model) > 255:
        raise BadInputError(
            f"model name is {len(model)} characters long; at most 255 are allowed",
            field="model",
        )
    return model


def validate_batch(
    records: Any, model: Any, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> list[PreparedRecord]:
    """Check a whole batch before anything is written, and canonicalise each record.

    Raises:
        BadInputError: on the first bad record, naming its index and the reason; a batch is
            accepted or rejected whole.
    """
    validate_model(model)
    if isinstance(records, str | bytes | Mapping) or not isinstance(records, Sequence):
        raise BadInputError(
            f"records must be a list of dicts, got {type(records).__name__}", field="records"
        )
    encode = _ENCODER.encode
    sha256 = hashlib.sha256
    prepared: list[PreparedRecord] = []
    append = prepared.append
    # The hot loop of every save: one encode and one hash per record, messages built only
    # on failure.
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            where = f"records[{index}]"
            raise BadInputError(f"{where}: must be a dict, got {_short_repr(record)}", field=where)
        external_id = record.get("id")
        if type(external_id) is not str or not 0 < len(external_id) <= MAX_EXTERNAL_ID_LENGTH:
            external_id = _external_id(record, f"records[{index}]")
        try:
            payload = encode(record)
        except ValueError as error:
            where = f"records[{index}]"
            raise BadInputError(
                f"{where}: not JSON-serialisable ({error}; NaN and infinity are not JSON)",
                field=where,
            ) from error
        except (TypeError, RecursionError) as error:
            where = f"records[{index}]"
            raise BadInputError(f"{where}: not JSON-serialisable ({error})", field=where) from error
        data = payload.encode("utf-8")
        if len(data) > max_record_bytes:
            where = f"records[{index}]"
            raise BadInputError(
                f"{where}: canonical JSON is {len(data)} bytes, over the limit of "
                f"{max_record_bytes} bytes; split large fields out of the record",
                field=where,
            )
        append(PreparedRecord(index, external_id, record, payload, sha256(data).hexdigest()))
    return prepared


def _external_id(record: dict[str, Any], where: str) -> str:
    value = record.get("id")
    # bool is an int subclass, but True is no identifier.
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadInputError(
            f"{where}.id: must be a string or integer, got {_short_repr(value)}",
            field=f"{where}.id",
        )
    external_id = str(value)
    if not external_id:
        raise BadInputError(f"{where}.id: must not be empty", field=f"{where}.id")
    if len(external_id) > MAX_EXTERNAL_ID_LENGTH:
        raise BadInputError(
            f"{where}.id: is {len(external_id)} characters long; at most "
            f"{MAX_EXTERNAL_ID_LENGTH} are allowed",
            field=f"{where}.id",
        )
    return external_id


def _short_repr(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def split_duplicates(
    prepared: list[PreparedRecord],
) -> tuple[list[PreparedRecord], list[str]]:
    """Keep the first record of each id; return the rest's ids (in batch order)."""
    seen: set[str] = set()
    unique: list[PreparedRecord] = []
    duplicates: list[str] = []
    for item in prepared:
        if item.external_id in seen:
            duplicates.append(item.external_id)
        else:
            seen.add(item.external_id)
            unique.append(item)
    return unique, duplicates


@dataclass(frozen=True, slots=True)
class StoredState:
    """What the store read of an existing record."""

    data_hash: str
    is_deleted: bool
    mod_seq: int
    #: The stored canonical JSON; loaded only when a decision needs it.
    payload: str | None = None


def decide(
    operation: Operation,
    stored: StoredState | None,
    incoming_hash: str,
    *,
    strategy: MergeStrategy,
    cursor_seq: int | None,
    incoming: Mapping[str, Any] | None = None,
    stored_record: Mapping[str, Any] | None = None,
) -> Action:
    """Decide what one incoming record does (ARCHITECTURE.md §5).

    For ``UPDATE`` pass ``incoming_hash`` of the *merged* record. ``incoming`` and
    ``stored_record`` (the parsed stored payload) are needed by ``newest_wins`` only.

    The strategy is applied to every operation on an existing record, deletes included: a
    poll's stale delete must not undo a newer webhook save any more than a stale save may.
    """
    if stored is None:
        return Action.INSERT if operation is Operation.SAVE else Action.IGNORE
    if operation is not Operation.SAVE and stored.is_deleted:
        return Action.IGNORE
    if _strategy_keeps_stored(stored, strategy, cursor_seq, incoming, stored_record):
        return Action.SKIP
    if operation is Operation.DELETE:
        return Action.DELETE
    if stored.is_deleted:
        return Action.UNDELETE
    if stored.data_hash == incoming_hash:
        return Action.UNCHANGED
    return Action.UPDATE


def _strategy_keeps_stored(
    stored: StoredState,
    strategy: MergeStrategy,
    cursor_seq: int | None,
    incoming: Mapping[str, Any] | None,
    stored_record: Mapping[str, Any] | None,
) -> bool:
    if strategy.name == "ignore_if_modified_after":
        if cursor_seq is None:
            raise ValueError("ignore_if_modified_after needs the execution's cursor_seq")
        return stored.mod_seq > cursor_seq
    if strategy.name == "newest_wins":
        assert strategy.field is not None
        if incoming is None or stored_record is None:
            return False
        return is_older(incoming.get(strategy.field), stored_record.get(strategy.field))
    return False


def is_older(incoming: Any, stored: Any) -> bool:
    """True only if ``incoming`` is strictly older than ``stored``.

    Both numbers, or both ISO-8601 timestamps (naive ones are taken as UTC) are compared;
    anything else — missing, equal, unparsable, a number against a timestamp — is not older,
    so ``newest_wins`` falls back to ``override``.
    """
    left, right = _comparable(incoming), _comparable(stored)
    if left is None or right is None or left[0] != right[0]:
        return False
    return bool(left[1] < right[1])


def _comparable(value: Any) -> tuple[str, Any] | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return None if isinstance(value, float) and math.isnan(value) else ("number", value)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return ("time", parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed)
    return None
