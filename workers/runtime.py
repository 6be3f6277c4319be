"""The ``nango`` object handed to sync scripts (ARCHITECTURE.md §4): one per execution.

It enforces the seed's best practices instead of documenting them:

* ``set_merging_strategy`` must come before any batch operation or API call of the
  execution (a strategy set halfway would apply to half the data) — later it raises;
* a second strategy for a model that has one is ignored with a warning;
* batch operations from two threads of one execution at once raise (their order, and so
  the merge outcome, would be a race);
* a bad batch is rejected whole by the store with the index and the reason.

Each batch operation is one store call (one transaction) made while holding the
connection's serialized lock — or, in a coalesced execution (``workers.coalesce``), is
validated at the call and written later, in order, with the batches of the executions
coalesced with it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import requests

from cache.merge import MergeStrategy, Operation, parse_strategy
from cache.models import RunSyncType
from cache.store import BatchResult, PendingWrite
from config.errors import BadInputError, FatalError
from config.integrations import ProviderConfig
from workers.external import ExternalClient, TokenSource, redact, secret_values
from workers.pagination import PaginationConfigError

__all__ = ["ConnectionInfo", "NangoRuntime", "ScriptUsageError", "SYNC_TYPES"]

logger = logging.getLogger(__name__)
script_logger = logging.getLogger("hooksync.script")

#: How the completion webhook names the kind of execution.
SYNC_TYPES = tuple(sync_type.value for sync_type in RunSyncType)

_OVERRIDE = MergeStrategy("override")
_LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


class ScriptUsageError(FatalError):
    """A sync script used the ``nango`` object in a way that cannot work."""


class StoreLike(Protocol):
    """What the runtime needs of ``cache.store.RecordStore``."""

    def prepare(
        self,
        operation: Operation,
        connection_pk: int,
        model: str,
        records: Sequence[Any],
        strategy: MergeStrategy,
        cursor_seq: int | None,
        *,
        cursor_key: Any = None,
    ) -> PendingWrite: ...
    def apply(
        self, writes: Sequence[PendingWrite], *, now: datetime | None = None
    ) -> list[BatchResult]: ...
    def current_seq(self, connection_pk: int, model: str) -> int: ...
    def open_tracking(self, run_id: int, connection_pk: int, model: str) -> int: ...
    def close_tracking(self, window_id: int, *, success: bool) -> int: ...


@dataclass(frozen=True)
class ConnectionInfo:
    """The connection an execution works for. ``credentials`` never reaches a log."""

    pk: int
    connection_id: str
    provider_config_key: str
    credentials: dict[str, Any] = field(repr=False)
    metadata: dict[str, Any] = field(default_factory=dict)


class NangoRuntime:
    """The ``nango`` object.

    Args:
        store: The record store.
        connection: The connection of this execution.
        provider: Its provider's configuration (base URL and auth for API calls).
        run_id: The ``sync_runs`` row, for deletion-detection windows and logs.
        sync_name: For logs.
        sync_type: ``INITIAL``, ``INCREMENTAL`` or ``WEBHOOK``.
        last_sync_date: Start of the last successful run (incremental runs), else None.
        output_models: The sync's declared models; they appear in ``results`` even when
            nothing changed, so the app hears about empty executions too.
        lock: ``lock(connection_pk)`` returns the connection's serialized lock.
        save_metadata: Persists the connection's metadata (``set_metadata``).
        client_factory: Builds the external-API client (default: from ``provider``).
        deferred: When given, batch operations are validated at the call and appended here
            as ``(runtime, PendingWrite)`` instead of written; the owner writes them and
            hands each result back through ``add_result`` (``workers.coalesce``).
        tokens: Keeps the connection's token fresh (``workers.token_refresh``): renewed
            before it expires and once after a 401; None uses the credentials as given.
    """

    def __init__(
        self,
        *,
        store: StoreLike,
        connection: ConnectionInfo,
        provider: ProviderConfig,
        run_id: int,
        sync_name: str,
        sync_type: str,
        last_sync_date: datetime | None = None,
        output_models: Sequence[str] = (),
        lock: Callable[[int], AbstractContextManager[Any]] | None = None,
        save_metadata: Callable[[dict[str, Any]], None] | None = None,
        client_factory: Callable[[], ExternalClient] | None = None,
        deferred: list[tuple[NangoRuntime, PendingWrite]] | None = None,
        tokens: TokenSource | None = None,
    ) -> None:
        if sync_type not in SYNC_TYPES:
            raise ValueError(f"sync_type must be one of {SYNC_TYPES}, got {sync_type!r}")
        self._store = store
        self._connection = connection
        self._provider = provider
        self.run_id = run_id
        self.sync_name = sync_name
        self.sync_type = sync_type
        self.last_sync_date = last_sync_date
        self._output_models = tuple(output_models)
        self._lock = lock or (lambda _pk: nullcontext())
        self._save_metadata = save_metadata
        self._client_factory = client_factory
        self._deferred = deferred
        self._tokens = tokens
        #: Every credential value this execution held (renewed tokens too), to mask.
        self._secrets = secret_values(connection.credentials)
        self._client: ExternalClient | None = None
        self._metadata = dict(connection.metadata or {})
        self._strategies: dict[str, MergeStrategy] = {}
        self._cursors: dict[str, int] = {}
        self._counts: dict[str, dict[str, int]] = {model: _zero() for model in self._output_models}
        self._windows: dict[str, int] = {}
        self._warned_models: set[str] = set()
        #: Set by the first batch operation or API call; set_merging_strategy refuses after.
        self._started = False
        self._batch_guard = threading.Lock()

    # -- identity ------------------------------------------------------------------------

    @property
    def connection_id(self) -> str:
        return self._connection.connection_id

    @property
    def provider_config_key(self) -> str:
        return self._connection.provider_config_key

    def get_connection(self) -> dict[str, Any]:
        """The connection as Nango hands it to scripts, credentials included (a token about
        to expire renewed first, as Nango's ``getConnection`` does)."""
        return {
            "connection_id": self._connection.connection_id,
            "provider_config_key": self._connection.provider_config_key,
            "metadata": dict(self._metadata),
            "credentials": self._current_credentials(),
        }

    def _current_credentials(self) -> dict[str, Any]:
        if self._tokens is None:
            return dict(self._connection.credentials)
        credentials = self._tokens.fresh()
        self._secrets = sorted(
            set(self._secrets) | set(secret_values(credentials)), key=len, reverse=True
        )
        return credentials

    def get_metadata(self) -> dict[str, Any]:
        return dict(self._metadata)

    def set_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Replace the connection's metadata (persisted at once)."""
        if not isinstance(metadata, Mapping):
            raise BadInputError(
                f"set_metadata expects a dict, got {type(metadata).__name__}", field="metadata"
            )
        value = dict(metadata)
        if self._save_metadata is not None:
            self._save_metadata(value)
        self._metadata = value

    def update_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Merge keys into the connection's metadata (persisted at once)."""
        if not isinstance(metadata, Mapping):
            raise BadInputError(
                f"update_metadata expects a dict, got {type(metadata).__name__}",
                field="metadata",
            )
        self.set_metadata({**self._metadata, **metadata})

    def log(self, *args: Any, level: str = "info") -> None:
        """Log a line attributed to this execution, the connection's credentials masked."""
        # A script that logs its connection (or a response echoing the token) must not
        # put the credentials into the worker's log.
        message = self.redact(" ".join(str(arg) for arg in args))
        script_logger.log(
            _LOG_LEVELS.get(str(level).lower(), logging.INFO),
            "[run %s %s/%s %s] %s",
            self.run_id,
            self.provider_config_key,
            self.sync_name,
            self.connection_id,
            message,
        )

    # -- merging strategy ----------------------------------------------------------------

    def set_merging_strategy(self, strategy: Any, model: str) -> None:
        """Choose how this execution's writes to ``model`` merge (ARCHITECTURE.md §5).

        Raises:
            ScriptUsageError: After a batch operation or an API call of this execution.
            BadInputError: An unknown strategy or a bad model name.
        """
        if self._started:
            raise ScriptUsageError(
                f"set_merging_strategy({strategy!r}, {model!r}) was called after a batch "
                "operation or an API call of this execution; call it first, at the top of "
                "fetch_data / on_webhook_payload_received"
            )
        parsed = parse_strategy(strategy)
        _check_model(model, "set_merging_strategy")
        if model in self._strategies:
            logger.warning(
                "run %s: set_merging_strategy(%r, %r) ignored: model %r already uses %r in "
                "this execution",
                self.run_id,
                strategy,
                model,
                model,
                self._strategies[model].name,
            )
            return
        self._strategies[model] = parsed
        if parsed.name == "ignore_if_modified_after":
            self._cursors[model] = self._store.current_seq(self._connection.pk, model)

    # -- batch operations ----------------------------------------------------------------

    def batch_save(self, records: Sequence[Any], model: str) -> bool:
        """Insert or replace records (added / updated / unchanged)."""
        return self._batch(Operation.SAVE, "batch_save", records, model)

    def batch_update(self, records: Sequence[Any], model: str) -> bool:
        """Deep-merge records into existing live ones; unknown ids are ignored."""
        return self._batch(Operation.UPDATE, "batch_update", records, model)

    def batch_delete(self, records: Sequence[Any], model: str) -> bool:
        """Soft-delete records by id."""
        return self._batch(Operation.DELETE, "batch_delete", records, model)

    def _batch(self, operation: Operation, name: str, records: Sequence[Any], model: str) -> bool:
        if not self._batch_guard.acquire(blocking=False):
            raise ScriptUsageError(
                f"{name}({model!r}) was called while another batch operation of this "
                "execution was still running in another thread; batch operations must run "
                "one at a time, in order (collect records per thread, then save them from one)"
            )
        try:
            self._started = True
            _check_model(model, name)
            if not isinstance(records, list | tuple):
                raise BadInputError(
                    f"{name} expects a list of records, got {type(records).__name__}",
                    code="invalid_records",
                    field="records",
                )
            self._warn_undeclared(model, name)
            self._counts.setdefault(model, _zero())
            if not records:
                return True
            pk = self._connection.pk
            # Validated here, whatever happens next: a bad batch raises in the script.
            pending = self._store.prepare(
                operation,
                pk,
                model,
                list(records),
                self._strategies.get(model, _OVERRIDE),
                self._cursors.get(model),
                cursor_key=(id(self), model),
            )
            if self._deferred is not None:
                self._deferred.append((self, pending))
                return True
            with self._lock(pk):
                result = self._store.apply([pending])[0]
            self.add_result(pending, result)
            return True
        finally:
            self._batch_guard.release()

    def add_result(self, pending: PendingWrite, result: BatchResult) -> None:
        """Count a written batch of this execution, and move its cursor past it."""
        model = pending.model
        cursor = self._cursors.get(model)
        if cursor is not None and result.max_seq is not None:
            # Our own writes must not look like someone else's to our next batch.
            self._cursors[model] = max(cursor, result.max_seq)
        counts = self._counts.setdefault(model, _zero())
        counts["added"] += result.added
        counts["updated"] += result.updated
        counts["deleted"] += result.deleted
        if result.duplicate_ids:
            logger.warning(
                "run %s: %s(%r) had duplicate ids, only the first record of each was used: %s",
                self.run_id,
                f"batch_{pending.operation.value}",
                model,
                ", ".join(map(repr, result.duplicate_ids[:10])),
            )

    def _warn_undeclared(self, model: str, name: str) -> None:
        if self._output_models and model not in self._output_models:
            if model not in self._warned_models:
                self._warned_models.add(model)
                logger.warning(
                    "run %s: %s writes model %r, which sync %r does not list in its output %s",
                    self.run_id,
                    name,
                    model,
                    self.sync_name,
                    list(self._output_models),
                )

    @property
    def merging_strategies(self) -> dict[str, dict[str, str]]:
        """``{model: {"strategy", "field"?}}`` set by ``set_merging_strategy`` in this
        execution (models left at the default ``override`` are absent)."""
        return {
            model: {
                "strategy": strategy.name,
                **({"field": strategy.field} if strategy.field else {}),
            }
            for model, strategy in self._strategies.items()
        }

    @property
    def results(self) -> dict[str, dict[str, int]]:
        """``{model: {"added", "updated", "deleted"}}`` of this execution so far."""
        return {model: dict(counts) for model, counts in self._counts.items()}

    # -- deletion detection --------------------------------------------------------------

    def track_deletes_start(self, model: str) -> None:
        """Open a deletion-detection window for ``model``; see ``track_deletes_end``."""
        _check_model(model, "track_deletes_start")
        if model in self._windows:
            logger.warning(
                "run %s: track_deletes_start(%r) ignored: already open", self.run_id, model
            )
            return
        with self._lock(self._connection.pk):
            self._windows[model] = self._store.open_tracking(
                self.run_id, self._connection.pk, model
            )

    def track_deletes_end(self, model: str) -> int:
        """Soft-delete the records of ``model`` no execution saved since the window opened.

        Returns:
            How many records were deleted.
        """
        _check_model(model, "track_deletes_end")
        window = self._windows.get(model)
        if window is None:
            raise ScriptUsageError(
                f"track_deletes_end({model!r}) without track_deletes_start({model!r}) "
                "earlier in this execution"
            )
        deleted = self._close_window(model, window, success=True)
        del self._windows[model]  # only once closed: a failed close is retried at the end
        return deleted

    def close_tracking(self, *, success: bool) -> None:
        """Close every window still open at the end of the execution.

        After a success they delete what was not seen; after a failure they delete nothing.
        """
        while self._windows:
            model, window = next(iter(self._windows.items()))
            self._close_window(model, window, success=success)
            del self._windows[model]

    def _close_window(self, model: str, window: int, *, success: bool) -> int:
        if not success:
            # Deletes nothing, so it needs no connection lock (which a run that lost its
            # lease could not take any more).
            return self._store.close_tracking(window, success=False)
        with self._lock(self._connection.pk):
            deleted = self._store.close_tracking(window, success=True)
        self._counts.setdefault(model, _zero())["deleted"] += deleted
        return deleted

    # -- external API --------------------------------------------------------------------

    def proxy(
        self,
        method: str = "GET",
        endpoint: str = "",
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        retries: int | None = None,
    ) -> requests.Response:
        """Call the provider's API with the connection's credentials.

        ``data`` follows Nango: a dict or list is sent as JSON, text or bytes as is.

        Raises:
            ExternalAPIError: A 4xx other than 408/429, or no ``base_url`` configured.
            ExternalAPIUnavailable: Retries exhausted.
        """
        self._started = True
        if json is None and isinstance(data, dict | list):
            json, data = data, None
        return self._api().request(
            method, endpoint, params=params, json=json, data=data, headers=headers, retries=retries
        )

    def get(self, endpoint: str, **kwargs: Any) -> requests.Response:
        return self.proxy("GET", endpoint, **kwargs)

    def post(self, endpoint: str, **kwargs: Any) -> requests.Response:
        return self.proxy("POST", endpoint, **kwargs)

    def put(self, endpoint: str, **kwargs: Any) -> requests.Response:
        return self.proxy("PUT", endpoint, **kwargs)

    def patch(self, endpoint: str, **kwargs: Any) -> requests.Response:
        return self.proxy("PATCH", endpoint, **kwargs)

    def delete(self, endpoint: str, **kwargs: Any) -> requests.Response:
        return self.proxy("DELETE", endpoint, **kwargs)

    def paginate(
        self,
        endpoint: str | Mapping[str, Any] = "",
        params: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> Iterator[list[Any]]:
        """Yield pages of a paginated endpoint (see ``ExternalClient.paginate``).

        Nango's form works as is: ``paginate(endpoint=…, params=…, method=…, data=…,
        paginate={"type": "cursor" | "link" | "offset", …})``, or that whole config as one
        dict. ``workers/pagination.py`` lists the settings.

        Raises:
            ScriptUsageError: The pagination settings cannot work (named key and value).
        """
        self._started = True
        if isinstance(endpoint, Mapping):
            options = {**endpoint, **options}
            endpoint = str(options.pop("endpoint", ""))
            params = options.pop("params", params)
        try:
            yield from self._api().paginate(endpoint, params, **options)
        except PaginationConfigError as error:
            raise ScriptUsageError(str(error)) from error

    def _api(self) -> ExternalClient:
        if self._client is None:
            if self._client_factory is not None:
                self._client = self._client_factory()
            else:
                self._client = ExternalClient(
                    self._provider.base_url,
                    self._provider.auth,
                    self._connection.credentials,
                    provider_key=self._provider.key,
                    tokens=self._tokens,
                )
        return self._client

    def redact(self, text: str) -> str:
        """Mask the connection's credential values in ``text`` (for error messages)."""
        text = redact(text, self._secrets)
        return self._client.redact(text) if self._client is not None else text

    def close(self) -> None:
        """Release the HTTP session."""
        if self._client is not None:
            self._client.close()


def _zero() -> dict[str, int]:
    return {"added": 0, "updated": 0, "deleted": 0}


def _check_model(model: Any, name: str) -> None:
    if not isinstance(model, str) or not model:
        raise BadInputError(
            f"{name} needs the model name as a non-empty string, got {model!r}",
            code="invalid_model",
            field="model",
        )
