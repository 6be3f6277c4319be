"""``GET /records``: the Nango-compatible records API (ARCHITECTURE.md §5).

The view only parses and checks parameters; ``cache.store.RecordStore.list_records`` does the
work. Every malformed parameter is a 400 naming the parameter and the value it got.
"""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Blueprint, Response, request
from sqlalchemy import select

from cache.db import read_scope
from cache.models import Connection
from cache.page import FILTERS, MAX_IDS, MAX_LIMIT
from cache.store import RecordStore
from config.errors import BadInputError
from ingress.auth import current_context, require_api_key
from ingress.errors import error_response, status_for

__all__ = ["bp"]

bp = Blueprint("records", __name__)

DEFAULT_LIMIT = 100


@bp.errorhandler(BadInputError)
def _bad_input(error: BadInputError) -> tuple[Response, int]:
    return error_response(status_for(error), error.code, str(error), field=error.field)


@bp.get("/records")
@bp.get("/records/")  # the official Nango Node client calls /records/?model=...
@require_api_key
def list_records() -> Response:
    ctx = current_context()
    args = request.args
    model = args.get("model", "").strip()
    if not model:
        raise BadInputError(
            "query parameter 'model' is required, e.g. /records?model=Task",
            code="missing_parameter",
            field="model",
        )
    limit = _parse_limit(args.get("limit"))
    modified_after = _parse_modified_after(args.get("modified_after"))
    filters = _parse_filter(args.get("filter"))
    ids = _parse_ids(args.getlist("ids"))
    cursor = args.get("cursor") or None

    connection_id = _require_header("Connection-Id")
    provider_config_key = _require_header("Provider-Config-Key")
    with read_scope(ctx.sessions) as session:
        connection_pk = session.execute(
            select(Connection.id).where(
                Connection.provider_config_key == provider_config_key,
                Connection.connection_id == connection_id,
            )
        ).scalar()
    if connection_pk is None:
        raise BadInputError(
            f"no connection {connection_id!r} for integration {provider_config_key!r}; "
            "create it with POST /connections first",
            code="unknown_connection",
            field="Connection-Id",
        )

    store = RecordStore(ctx.sessions, cursor_key=ctx.settings.secret_key)
    page = store.list_records(
        connection_pk,
        model,
        cursor=cursor,
        limit=limit,
        modified_after=modified_after,
        filter=filters,
        ids=ids,
    )
    return Response(page.to_json(), mimetype="application/json")


def _require_header(name: str) -> str:
    value = request.headers.get(name, "").strip()
    if not value:
        raise BadInputError(
            f"header {name!r} is required (with Connection-Id and Provider-Config-Key naming "
            "the connection)",
            code="missing_header",
            field=name,
        )
    return value


def _invalid(name: str, value: str, expected: str) -> BadInputError:
    return BadInputError(
        f"query parameter {name!r} must be {expected}, got {value!r}",
        code="invalid_parameter",
        field=name,
    )


def _parse_limit(value: str | None) -> int:
    # ``limit=`` (empty) is refused like any bad value: the OpenAPI document types it.
    if value is None:
        return DEFAULT_LIMIT
    expected = f"an integer from 1 to {MAX_LIMIT}"
    try:
        limit = int(value)
    except ValueError:
        raise _invalid("limit", value, expected) from None
    if not 1 <= limit <= MAX_LIMIT:
        raise _invalid("limit", value, expected)
    return limit


def _parse_modified_after(value: str | None) -> datetime | None:
    """ISO-8601; a value without a zone is taken as UTC."""
    if value is None:
        return None
    expected = "an ISO-8601 timestamp, e.g. 2026-11-26T12:00:00Z"
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise _invalid("modified_after", value, expected) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        # Converted here: year 1 or 9999 with an offset has no UTC value, and the
        # query's conversion would fail with a 500 instead of this 400.
        return parsed.astimezone(UTC)
    except OverflowError:
        raise _invalid("modified_after", value, expected + " within years 1-9999 in UTC") from None


def _parse_filter(value: str | None) -> set[str] | None:
    if value is None:
        return None
    names = {part.strip().lower() for part in value.split(",") if part.strip()}
    if not names or not names <= FILTERS:
        raise _invalid("filter", value, "a comma list of added, updated, deleted")
    return names


def _parse_ids(values: list[str]) -> list[str] | None:
    """``ids`` may repeat (``ids=a&ids=b``) and each value may be a comma list."""
    if not values:
        return None
    ids = [part.strip() for value in values for part in value.split(",") if part.strip()]
    if not ids:
        raise _invalid("ids", ",".join(values), "one or more record ids")
    unique = list(dict.fromkeys(ids))
    if len(unique) > MAX_IDS:
        raise BadInputError(
            f"query parameter 'ids' lists {len(unique)} ids; at most {MAX_IDS} are allowed",
            code="invalid_parameter",
            field="ids",
        )
    return unique
