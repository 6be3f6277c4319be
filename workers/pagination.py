"""Which request follows a page: Nango's pagination styles as pure decisions, no I/O.

``ExternalClient.paginate`` sends the requests; this module decides what each one carries
and when to stop, from the settings and the previous response. The settings use Nango's
names (``paginate={"type": "cursor", ...}``), so a script's configuration written for Nango
works unchanged:

* ``cursor``: the next cursor is read at ``cursor_path_in_response`` and sent as
  ``cursor_name_in_request``. Stops when it is absent, null, ``false`` or blank.
* ``link``: the next page's URL is the ``Link`` header's ``link_rel_in_response_header``
  relation or the body's ``link_path_in_response_body`` (header first when both are set).
  The URL carries its own query, so the first page's ``params`` are not sent again.
* ``offset``: ``offset_name_in_request`` starts at ``offset_start_value`` (0) and grows by
  the page's length (``by-response-size``, the default) or by 1 (``per-page``: page
  numbers). A page shorter than ``limit`` is the last: offsets give no other signal.

Shared: ``response_path`` (where the list is; the body itself when unset),
``limit`` and ``limit_name_in_request`` (the page size, sent with every request),
``in_body`` (parameters go into the JSON body; default for POST, PUT and PATCH, where a
dotted name such as ``page.cursor`` sets a nested field, as Nango does) and ``on_page``
(called with ``{"nextPageParam", "response"}`` for each page, before it is handed out).

Every style stops at an empty page, and a cursor or link that comes back a second time
stops the walk (with a warning from the caller) instead of looping forever.

Without settings, hooksync's original behaviour applies (``Pagination.auto``): a body
cursor at ``next_cursor`` sent as ``cursor``, else the ``Link`` header's ``next``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from config.errors import FatalError
from workers.routing import lookup

__all__ = [
    "BODY_METHODS",
    "OFFSET_METHODS",
    "TYPES",
    "PageRequest",
    "PageWalk",
    "Pagination",
    "PaginationConfigError",
    "UnexpectedPage",
    "parse_pagination",
    "resolve_link",
    "select_pagination",
]

#: Nango's pagination types.
TYPES = ("cursor", "link", "offset")

#: ``offset_calculation_method`` values: add 1 per page, or add the page's length.
OFFSET_METHODS = ("per-page", "by-response-size")

#: Methods whose pagination parameters go into the body unless ``in_body`` says otherwise.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})

#: The keys each type accepts besides the shared ones.
_SHARED_KEYS = ("type", "response_path", "limit", "limit_name_in_request", "in_body", "on_page")
_TYPE_KEYS = {
    "cursor": ("cursor_path_in_response", "cursor_name_in_request"),
    "link": ("link_rel_in_response_header", "link_path_in_response_body"),
    "offset": ("offset_name_in_request", "offset_start_value", "offset_calculation_method"),
}
_ALL_KEYS = _SHARED_KEYS + tuple(key for keys in _TYPE_KEYS.values() for key in keys)

#: hooksync's own keywords of ``paginate()`` (before Nango's settings) and their defaults,
#: with the Nango setting that replaces each.
LEGACY_DEFAULTS: dict[str, Any] = {
    "response_path": None,
    "cursor_path": "next_cursor",
    "cursor_param": "cursor",
    "link_header": True,
    "limit": None,
    "limit_param": "limit",
}
_LEGACY_NAMES = {
    "response_path": "response_path",
    "cursor_path": "cursor_path_in_response",
    "cursor_param": "cursor_name_in_request",
    "link_header": "link_rel_in_response_header",
    "limit": "limit",
    "limit_param": "limit_name_in_request",
}

_INDEX = re.compile(r"\[(\d+)\]")


class PaginationConfigError(FatalError):
    """The pagination settings a script passed cannot work (a script usage error).

    Attributes:
        key: The setting at fault, as the script spelled it (``paginate.type``).
    """

    def __init__(self, message: str, *, key: str) -> None:
        super().__init__(message)
        self.key = key


class UnexpectedPage(ValueError):
    """A response does not have the shape the settings describe (the caller names it)."""


@dataclass(frozen=True)
class Pagination:
    """Validated pagination settings (``parse_pagination`` builds them from a script's dict).

    ``type`` is one of ``TYPES``, or ``"auto"`` for hooksync's original behaviour.
    """

    type: str
    response_path: str | None = None
    limit: int | str | None = None
    limit_name_in_request: str | None = None
    in_body: bool | None = None
    cursor_path_in_response: str | None = None
    cursor_name_in_request: str | None = None
    link_rel_in_response_header: str | None = None
    link_path_in_response_body: str | None = None
    offset_name_in_request: str | None = None
    offset_start_value: int = 0
    offset_calculation_method: str = "by-response-size"
    on_page: Callable[[dict[str, Any]], Any] | None = field(default=None, compare=False)

    @classmethod
    def auto(
        cls,
        *,
        response_path: str | None = None,
        cursor_path: str | None = "next_cursor",
        cursor_param: str = "cursor",
        link_header: bool = True,
        limit: int | str | None = None,
        limit_param: str = "limit",
    ) -> Pagination:
        """hooksync's original style: a body cursor, else the ``Link`` header's ``next``."""
        return cls(
            type="auto",
            response_path=response_path,
            limit=limit,
            limit_name_in_request=limit_param,
            cursor_path_in_response=cursor_path,
            cursor_name_in_request=cursor_param,
            link_rel_in_response_header="next" if link_header else None,
        )


@dataclass(frozen=True)
class PageRequest:
    """One page's request.

    Attributes:
        endpoint: A path under the provider's ``base_url``, or an absolute URL (a link).
        params: The query parameters.
        body: The JSON body; None sends none.
        page_param: The cursor, offset or link this request carries (Nango's
            ``nextPageParam``); None for the first page of a cursor or link walk.
    """

    endpoint: str
    params: Mapping[str, Any]
    body: Any = None
    page_param: Any = None


def parse_pagination(settings: Any) -> Pagination:
    """Validate a script's ``paginate`` settings (Nango's names).

    Raises:
        PaginationConfigError: Not a dict, an unknown or misplaced key, a missing required
            key, or a value of the wrong kind; the message names the key and the value.
    """
    if not isinstance(settings, Mapping):
        raise PaginationConfigError(
            "paginate must be a dict of Nango's pagination settings "
            f"(e.g. {{'type': 'cursor', ...}}), got {type(settings).__name__} {settings!r}",
            key="paginate",
        )
    for key in settings:
        if key not in _ALL_KEYS:
            close = difflib.get_close_matches(str(key), _ALL_KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PaginationConfigError(
                f"paginate.{key} is not a pagination setting{hint} (known: {', '.join(_ALL_KEYS)})",
                key=f"paginate.{key}",
            )
    kind = settings.get("type")
    if kind is None:
        raise PaginationConfigError(
            f"paginate.type is required: one of {', '.join(map(repr, TYPES))}",
            key="paginate.type",
        )
    if kind not in TYPES:
        raise PaginationConfigError(
            f"paginate.type must be one of {', '.join(map(repr, TYPES))}, got {kind!r} "
            "(page numbers are type 'offset' with offset_calculation_method 'per-page')",
            key="paginate.type",
        )
    for key in settings:
        if key not in _SHARED_KEYS and key not in _TYPE_KEYS[kind]:
            owner = next(name for name, keys in _TYPE_KEYS.items() if key in keys)
            raise PaginationConfigError(
                f"paginate.{key} belongs to type {owner!r}, not to type {kind!r}",
                key=f"paginate.{key}",
            )
    names = [key for key in _ALL_KEYS if key.endswith(("_in_request", "_in_response_header"))]
    for key in names:
        _check_text(settings, key, empty_ok=False)
    for key in ("response_path", "cursor_path_in_response", "link_path_in_response_body"):
        _check_text(settings, key, empty_ok=key == "response_path")
    limit = settings.get("limit")
    if limit is not None and _limit_number(limit) is None:
        raise PaginationConfigError(
            f"paginate.limit must be a positive integer, got {limit!r}", key="paginate.limit"
        )
    in_body = settings.get("in_body")
    if in_body is not None and not isinstance(in_body, bool):
        raise PaginationConfigError(
            f"paginate.in_body must be True or False, got {in_body!r}", key="paginate.in_body"
        )
    on_page = settings.get("on_page")
    if on_page is not None and not callable(on_page):
        raise PaginationConfigError(
            f"paginate.on_page must be a function, got {on_page!r}", key="paginate.on_page"
        )
    _require_for_type(kind, settings)
    start = settings.get("offset_start_value", 0)
    if isinstance(start, bool) or not isinstance(start, int) or start < 0:
        raise PaginationConfigError(
            f"paginate.offset_start_value must be an integer >= 0, got {start!r}",
            key="paginate.offset_start_value",
        )
    method = settings.get("offset_calculation_method", "by-response-size")
    if method not in OFFSET_METHODS:
        raise PaginationConfigError(
            "paginate.offset_calculation_method must be one of "
            f"{', '.join(map(repr, OFFSET_METHODS))}, got {method!r}",
            key="paginate.offset_calculation_method",
        )
    return Pagination(
        type=kind,
        response_path=settings.get("response_path") or None,
        limit=limit,
        limit_name_in_request=settings.get("limit_name_in_request"),
        in_body=in_body,
        cursor_path_in_response=settings.get("cursor_path_in_response"),
        cursor_name_in_request=settings.get("cursor_name_in_request"),
        link_rel_in_response_header=settings.get("link_rel_in_response_header"),
        link_path_in_response_body=settings.get("link_path_in_response_body"),
        offset_name_in_request=settings.get("offset_name_in_request"),
        offset_start_value=start,
        offset_calculation_method=method,
        on_page=on_page,
    )


def select_pagination(paginate: Pagination | Mapping[str, Any] | None, **legacy: Any) -> Pagination:
    """The settings of one ``paginate()`` call: Nango's ``paginate`` or hooksync's keywords.

    Args:
        paginate: Nango's settings (a dict, or already parsed); None: use ``legacy``.
        legacy: hooksync's keywords (``LEGACY_DEFAULTS``) as the call passed them.

    Raises:
        PaginationConfigError: Both forms were used, or the settings are invalid.
    """
    if paginate is None:
        return Pagination.auto(**legacy)
    mixed = [name for name, value in legacy.items() if value != LEGACY_DEFAULTS[name]]
    if mixed:
        moves = ", ".join(f"{name} -> paginate[{_LEGACY_NAMES[name]!r}]" for name in mixed)
        raise PaginationConfigError(
            f"paginate() got both paginate={{...}} and the keyword(s) {', '.join(mixed)}; "
            f"put them into the settings under Nango's names ({moves})",
            key=mixed[0],
        )
    return paginate if isinstance(paginate, Pagination) else parse_pagination(paginate)


def resolve_link(link: str, base_url: str | None) -> str:
    """The URL a next-page link points to.

    An absolute URL is kept. A path starting with ``/`` that already contains the base
    URL's path (``/api/v2/items`` under ``https://h/api/v2``) is taken from the host;
    any other path is under ``base_url``, as Nango treats it.
    """
    link = link.strip()
    if link.startswith(("http://", "https://")) or not base_url:
        return link
    base = urlsplit(base_url.rstrip("/"))
    origin = f"{base.scheme}://{base.netloc}"
    prefix = base.path.rstrip("/")
    if link.startswith("/") and prefix:
        rest = link[len(prefix) :]
        if link.startswith(prefix) and (not rest or rest[0] in "/?#"):
            return origin + link
    return f"{base_url.rstrip('/')}/{link.lstrip('/')}"


class PageWalk:
    """The requests of one paginated walk, decided from each response. No I/O.

    Args:
        config: The settings.
        method: The HTTP method (it decides where parameters go when ``in_body`` is unset).
        endpoint: The first page's path.
        params: The first page's query parameters.
        data: The first page's body (a dict when parameters go into the body).
        base_url: The provider's base URL, to resolve relative links.
        max_pages: Stop after this many pages (hooksync's guard); None: no limit.

    Raises:
        PaginationConfigError: Parameters must go into the body but ``data`` is no dict.
    """

    def __init__(
        self,
        config: Pagination,
        *,
        method: str = "GET",
        endpoint: str,
        params: Mapping[str, Any] | None = None,
        data: Any = None,
        base_url: str | None = None,
        max_pages: int | None = None,
    ) -> None:
        self.config = config
        method = method.upper()
        self.in_body = config.in_body if config.in_body is not None else method in BODY_METHODS
        if self.in_body and data is not None and not isinstance(data, Mapping):
            raise PaginationConfigError(
                f"paginate puts its parameters into the request body ({method}"
                f"{', in_body' if config.in_body else ''}), so data must be a dict, "
                f"got {type(data).__name__} {data!r}",
                key="data",
            )
        self._endpoint = endpoint
        self._params = dict(params or {})
        self._data = data
        self._base_url = base_url
        self._max_pages = max_pages
        self._pages = 0
        self._seen: set[tuple[str, Any]] = set()
        #: Set when ``after`` stopped because the API sent a cursor or link seen before.
        self.repeated = False

    def first(self) -> PageRequest:
        """The first page's request: the caller's parameters, the page size and start offset."""
        request = PageRequest(self._endpoint, self._params, self._initial_body())
        if self.config.limit is not None and self.config.limit_name_in_request:
            request = self._with(request, self.config.limit_name_in_request, self.config.limit)
        if self.config.type == "offset":
            start = self.config.offset_start_value
            request = self._with_offset(request, start)
        return request

    def items(self, body: Any) -> list[Any]:
        """The page's records: the list at ``response_path`` (or the body itself).

        Raises:
            UnexpectedPage: No list there.
        """
        path = self.config.response_path
        found = _dig(body, path) if path else body
        if not isinstance(found, list):
            where = f"at {path!r}" if path else "as the body"
            raise UnexpectedPage(
                f"expected a list {where}, got {type(found).__name__}; "
                "set response_path to the field that holds the records"
            )
        return found

    def after(
        self, request: PageRequest, body: Any, links: Mapping[str, str], items: list[Any]
    ) -> PageRequest | None:
        """The request for the page after ``request`` (which returned ``items``), or None.

        Args:
            request: The request just sent.
            body: Its parsed JSON body.
            links: Its ``Link`` header, relation to URL.
            items: Its records; an empty page has no successor.

        Raises:
            UnexpectedPage: The cursor is an object or a list (the path is wrong).
        """
        if not items:
            return None  # every style ends at an empty page
        self._pages += 1
        if self._max_pages is not None and self._pages >= self._max_pages:
            return None
        kind = self.config.type
        if kind == "offset":
            return self._next_offset(request, items)
        if kind in ("cursor", "auto"):
            cursor = self._cursor(body)
            if cursor is not None:
                return self._remember(("cursor", cursor), self._with_cursor(request, cursor))
            if kind == "cursor":
                return None
        link = self._link(body, links)
        if link is None:
            return None
        target = resolve_link(link, self._base_url)
        # The link carries its own query (the page size included); the body stays.
        next_request = PageRequest(target, {}, request.body, page_param=link)
        return self._remember(("link", target), next_request)

    # -- internals -----------------------------------------------------------------------

    def _initial_body(self) -> Any:
        if self.in_body:
            return dict(self._data or {})
        return self._data

    def _next_offset(self, request: PageRequest, items: list[Any]) -> PageRequest | None:
        limit = _limit_number(self.config.limit)
        if limit is not None and len(items) < limit:
            return None  # a short page is the last one
        step = 1 if self.config.offset_calculation_method == "per-page" else len(items)
        return self._with_offset(request, int(request.page_param) + step)

    def _with_offset(self, request: PageRequest, offset: int) -> PageRequest:
        name = self.config.offset_name_in_request or ""
        # Nango sends the offset as text in a query string and as a number in a body.
        value: Any = offset if self.in_body else str(offset)
        return replace(self._with(request, name, value), page_param=offset)

    def _with_cursor(self, request: PageRequest, cursor: Any) -> PageRequest:
        name = self.config.cursor_name_in_request or ""
        return replace(self._with(request, name, cursor), page_param=cursor)

    def _with(self, request: PageRequest, name: str, value: Any) -> PageRequest:
        if self.in_body:
            return replace(request, body=_set_dotted(request.body or {}, name, value))
        return replace(request, params={**request.params, name: value})

    def _cursor(self, body: Any) -> Any:
        path = self.config.cursor_path_in_response
        if not path or not isinstance(body, Mapping | list):
            return None
        cursor = _dig(body, path)
        if isinstance(cursor, str):
            return cursor.strip() or None
        if cursor is None or isinstance(cursor, bool):
            return None  # null, absent or ``false``: no more pages
        if isinstance(cursor, int | float):
            return cursor
        raise UnexpectedPage(
            f"the cursor at {path!r} is a {type(cursor).__name__}, not a string or number; "
            "point cursor_path_in_response at the cursor value itself"
        )

    def _link(self, body: Any, links: Mapping[str, str]) -> str | None:
        rel = self.config.link_rel_in_response_header
        if rel:
            link = links.get(rel)
            if link:
                return link
        path = self.config.link_path_in_response_body
        if path:
            found = _dig(body, path)
            if isinstance(found, str) and found.strip():
                return found
        return None

    def _remember(self, key: tuple[str, Any], request: PageRequest) -> PageRequest | None:
        if key in self._seen:
            self.repeated = True
            return None
        self._seen.add(key)
        return request


def _dig(body: Any, path: str) -> Any:
    # lodash's ``a.b[0].c``, which Nango scripts use, is ``a.b.0.c`` for ``lookup``.
    return lookup(body, _INDEX.sub(r".\1", path))


def _set_dotted(body: Mapping[str, Any], name: str, value: Any) -> dict[str, Any]:
    """A copy of ``body`` with ``value`` at dotted ``name`` (``page.cursor`` nests)."""
    head, _, rest = name.partition(".")
    result = dict(body)
    if not rest:
        result[head] = value
        return result
    inner = result.get(head)
    result[head] = _set_dotted(inner if isinstance(inner, Mapping) else {}, rest, value)
    return result


def _limit_number(limit: Any) -> int | None:
    if isinstance(limit, bool):
        return None
    if isinstance(limit, int):
        return limit if limit > 0 else None
    if isinstance(limit, str) and limit.strip().isdigit() and int(limit) > 0:
        return int(limit)
    return None


def _check_text(settings: Mapping[str, Any], key: str, *, empty_ok: bool) -> None:
    value = settings.get(key)
    if value is None or (isinstance(value, str) and (value.strip() or empty_ok)):
        return
    raise PaginationConfigError(
        f"paginate.{key} must be a non-empty string, got {value!r}", key=f"paginate.{key}"
    )


def _require_for_type(kind: str, settings: Mapping[str, Any]) -> None:
    if kind == "cursor":
        for key in ("cursor_path_in_response", "cursor_name_in_request"):
            if not settings.get(key):
                raise PaginationConfigError(
                    f"paginate.{key} is required for type 'cursor'", key=f"paginate.{key}"
                )
        if settings.get("limit") is not None and not settings.get("limit_name_in_request"):
            raise PaginationConfigError(
                f"paginate.limit_name_in_request is required for type 'cursor' when limit is "
                f"set (limit={settings['limit']!r}): the query parameter the page size goes in",
                key="paginate.limit_name_in_request",
            )
    elif kind == "link":
        if not settings.get("link_rel_in_response_header") and not settings.get(
            "link_path_in_response_body"
        ):
            raise PaginationConfigError(
                "paginate.link_rel_in_response_header (e.g. 'next') or "
                "paginate.link_path_in_response_body is required for type 'link'",
                key="paginate.link_rel_in_response_header",
            )
    elif not settings.get("offset_name_in_request"):
        raise PaginationConfigError(
            "paginate.offset_name_in_request is required for type 'offset' "
            "(the query parameter the offset or page number goes in)",
            key="paginate.offset_name_in_request",
        )
