"""Reading the records cache: ``list_records`` pages in Nango's shape (ARCHITECTURE.md §5).

Pages run ascending by ``mod_seq``. Because writers hand out ``mod_seq`` values in commit
order (``cache.store``), a reader that resumes after the last cursor it saw never misses a
record's final state, however writers interleave with its pages. A page only reads: run it in
a ``cache.db.read_scope`` so that, on SQLite, it never waits behind a writer's lock.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, or_, select, type_coerce
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session
from sqlalchemy.types import NullType

from cache.cursor import decode_cursor, encode_cursor
from cache.merge import validate_model
from cache.models import Record
from cache.timestamps import api_time
from config.errors import BadInputError

__all__ = [
    "FILTERS",
    "MAX_IDS",
    "MAX_LIMIT",
    "RecordsPage",
    "list_page",
    "time_reader",
]

#: Records API bounds (Nango's).
MAX_LIMIT = 10_000
MAX_IDS = 100
FILTERS = frozenset({"added", "updated", "deleted"})

_records = cast(Table, Record.__table__)
#: The records API's JSON: compact, non-ASCII kept (the payloads' canonical form, unsorted).
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_encode_string: Callable[[str], str] = json.encoder.encode_basestring

#: Timestamps come back as the driver returns them (naive UTC) and go to ISO text in
#: ``_iso_writer``: no aware datetime is built for a value that is only printed.
_PAGE_COLUMNS = (
    _records.c.external_id,
    _records.c.payload,
    type_coerce(_records.c.first_seen_at, NullType()),
    type_coerce(_records.c.last_modified_at, NullType()),
    type_coerce(_records.c.deleted_at, NullType()),
    _records.c.mod_seq,
)


@dataclass(frozen=True)
class RecordsPage:
    #: Each record of the page as JSON text, in order: the body is spliced from these.
    record_texts: list[str]
    #: Cursor of the page's last record when the page is full (there may be more), else None.
    next_cursor: str | None

    @functools.cached_property
    def records(self) -> list[dict[str, Any]]:
        """The page's records, parsed (the records API itself only needs ``to_json``)."""
        return [json.loads(text) for text in self.record_texts]

    def to_json(self) -> str:
        """The records API body."""
        cursor = "null" if self.next_cursor is None else _encode_string(self.next_cursor)
        return f'{{"records":[{",".join(self.record_texts)}],"next_cursor":{cursor}}}'


def list_page(
    session: Session,
    cursor_key: str,
    connection_pk: int,
    model: str,
    *,
    cursor: str | None = None,
    limit: int = 100,
    modified_after: datetime | None = None,
    filter: Collection[str] | None = None,
    ids: Iterable[str] | None = None,
) -> RecordsPage:
    """One page of records in the Nango shape, ascending by ``mod_seq``.

    Args:
        cursor: start after this record (a ``next_cursor`` or a record's metadata cursor).
        limit: 1 to 10,000 records.
        modified_after: only records whose ``last_modified_at`` is strictly after this
            aware datetime (Nango's "after"; a client passing the last timestamp it saw
            does not get that record again — cursors are the exact way to resume).
        filter: a subset of {"added", "updated", "deleted"}: the union of those
            ``last_action`` values. None or empty means all.
        ids: at most 100 external ids to restrict the page to.

    Raises:
        BadInputError: a bad parameter, named with its value; ``invalid_cursor`` for a
            cursor this server did not issue.
    """
    validate_model(model)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise BadInputError(
            f"limit must be an integer from 1 to {MAX_LIMIT}, got {limit!r}", field="limit"
        )
    after_seq = 0 if cursor is None else decode_cursor(cursor, cursor_key)
    query = (
        select(*_PAGE_COLUMNS)
        .where(
            _records.c.connection_pk == connection_pk,
            _records.c.model == model,
            _records.c.mod_seq > after_seq,
        )
        .order_by(_records.c.mod_seq)
        .limit(limit)
    )
    if modified_after is not None:
        if not isinstance(modified_after, datetime) or modified_after.tzinfo is None:
            raise BadInputError(
                f"modified_after must be an aware datetime, got {modified_after!r}",
                field="modified_after",
            )
        query = query.where(_records.c.last_modified_at > modified_after)
    condition = _filter_condition(filter)
    if condition is not None:
        query = query.where(condition)
    if ids is not None:
        wanted = _check_ids(ids)
        query = query.where(_records.c.external_id.in_(wanted))
    result = session.connection().execute(query)
    # Straight from the DBAPI cursor: every column is read raw (see _PAGE_COLUMNS), and
    # SQLAlchemy's row objects would cost a good part of the page.
    assert result.cursor is not None
    rows = result.cursor.fetchall()
    result.close()
    texts, last_cursor = _to_nango(rows, _iso_writer(session.get_bind().dialect), cursor_key)
    return RecordsPage(texts, last_cursor if len(rows) == limit else None)


def _to_nango(
    rows: Sequence[Any], to_iso: Callable[[Any], str], key: str
) -> tuple[list[str], str | None]:
    """Each row as the JSON text of its Nango record, and the last row's cursor.

    The hot loop of the records API, so a record is not decoded and encoded again when it
    need not be: the stored payload is canonical JSON (compact, sorted keys, the encoding
    of ``to_json``), so its text is the record's text up to the final ``}``, where the
    metadata object goes. That holds when the payload's ``id`` already is the string
    external id: the id cannot have been an integer (the external id is no integer's
    ``str``) and its JSON text is in the payload. Any other row — an integer-like id, a
    payload with its own ``_nango_metadata`` key — is decoded, amended and encoded, which
    gives the same text the splice would.
    """
    texts = []
    cursor = None
    for external_id, payload, first_seen_at, last_modified_at, deleted_at, mod_seq in rows:
        first_seen, last_modified = to_iso(first_seen_at), to_iso(last_modified_at)
        if deleted_at is not None:
            action = "DELETED"
        elif last_modified_at == first_seen_at:
            action = "ADDED"
        else:
            action = "UPDATED"
        deleted = None if deleted_at is None else to_iso(deleted_at)
        deleted_text = "null" if deleted is None else f'"{deleted}"'
        cursor = encode_cursor(mod_seq, key)
        if (
            not external_id.lstrip("-").isdigit()
            and f'"id":{_encode_string(external_id)}' in payload
            and '"_nango_metadata":' not in payload
        ):
            # Timestamps, action and cursor are plain ASCII: nothing in them needs escaping.
            texts.append(
                f'{payload[:-1]},"_nango_metadata":{{"first_seen_at":"{first_seen}",'
                f'"last_modified_at":"{last_modified}","last_action":"{action}",'
                f'"deleted_at":{deleted_text},"cursor":"{cursor}"}}}}'
            )
            continue
        record: dict[str, Any] = json.loads(payload)
        record["id"] = external_id
        record["_nango_metadata"] = {
            "first_seen_at": first_seen,
            "last_modified_at": last_modified,
            "last_action": action,
            "deleted_at": deleted,
            "cursor": cursor,
        }
        texts.append(_ENCODER.encode(record))
    return texts, cursor


def _iso_writer(dialect: Dialect) -> Callable[[Any], str]:
    """Format a raw stored timestamp as ``api_time`` does, without a datetime if possible.

    SQLAlchemy stores SQLite datetimes as text ``YYYY-MM-DD HH:MM:SS.ffffff`` (always six
    digits); Postgres drivers return naive datetimes. Both are UTC (``UTCDateTime``).
    Anything else goes through the column type.
    """
    to_time = time_reader(dialect)

    def to_iso(value: Any) -> str:
        if type(value) is str and len(value) == 26 and value[10] == " ":
            return f"{value[:10]}T{value[11:]}+00:00"
        if type(value) is datetime and value.tzinfo is None:
            return value.isoformat(timespec="microseconds") + "+00:00"
        return api_time(to_time(value))

    return to_iso


def time_reader(dialect: Dialect) -> Callable[[Any], datetime]:
    """Convert a raw ``last_modified_at`` from the driver the way the column type would."""
    process = _records.c.last_modified_at.type.dialect_impl(dialect).result_processor(dialect, None)
    assert process is not None
    return cast(Callable[[Any], datetime], process)


def _filter_condition(filter: Collection[str] | None) -> Any:
    if filter is None:
        return None
    if isinstance(filter, str):
        raise BadInputError(
            f"filter must be a collection of names, got the string {filter!r}", field="filter"
        )
    chosen = set(filter)
    unknown = sorted(str(name) for name in chosen - FILTERS)
    if unknown:
        raise BadInputError(
            f"filter has unknown value(s) {', '.join(repr(n) for n in unknown)}; use any of "
            "'added', 'updated', 'deleted'",
            field="filter",
        )
    if not chosen or chosen == FILTERS:
        return None
    live = _records.c.deleted_at.is_(None)
    same_time = _records.c.last_modified_at == _records.c.first_seen_at
    parts = []
    if "added" in chosen:
        parts.append(and_(live, same_time))
    if "updated" in chosen:
        parts.append(and_(live, ~same_time))
    if "deleted" in chosen:
        parts.append(_records.c.deleted_at.is_not(None))
    return or_(*parts)


def _check_ids(ids: Iterable[str]) -> list[str]:
    if isinstance(ids, str):
        raise BadInputError(f"ids must be a list of ids, got the string {ids!r}", field="ids")
    wanted = list(dict.fromkeys(ids))
    if len(wanted) > MAX_IDS:
        raise BadInputError(
            f"ids lists {len(wanted)} ids; at most {MAX_IDS} are allowed", field="ids"
        )
    for value in wanted:
        if not isinstance(value, str) or not value:
            raise BadInputError(f"ids must be non-empty strings, got {value!r}", field="ids")
    return wanted
