"""A peer measured side by side on Postgres: the ``dlt`` library's merge load.

The same records ``bench.merge`` saves (same ids, same fields, same nested ``assignee`` and
``tags``) are loaded with ``write_disposition="merge"`` and ``primary_key="id"`` (dlt's
default ``delete-insert`` merge strategy) into the bench database, in a dataset (a Postgres
schema) of their own that is dropped afterwards. Two passes, as ours: all records new, then all
records changed.

Each pass is **one** ``pipeline.run`` of all the records, not one run per batch of 1,000: a
run carries a fixed cost (extract, normalise, write load files, stage and merge), so a single
load is dlt's best case and what its docs recommend for bulk data. The clock covers the whole
``run`` (extract + normalise + load), as ours covers the whole ``save``.

dlt defaults are kept, so the nested ``assignee`` object becomes ``assignee__*`` columns and the
``tags`` list a child table, as a dlt user would get them.

Needs the optional extra: ``pip install -e '.[bench]'`` (``make bench`` installs it).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

#: dlt's own settings for the bench, set before it is imported: no usage telemetry (this
#: machine reaches no outside host) and no progress output in the table.
_DLT_ENV = {"RUNTIME__DLTHUB_TELEMETRY": "false", "RUNTIME__LOG_LEVEL": "WARNING"}


@dataclass(frozen=True)
class PeerResult:
    """Records per second for each pass, keyed ``"new"`` and ``"changed"``."""

    rates: dict[str, float]
    version: str


class PeerSkipped(Exception):
    """The peer could not run here; the message says why."""


def _dlt_credentials(sqlalchemy_url: str) -> str:
    """dlt takes a plain ``postgresql://`` URL, and insists on a password even where the
    server trusts loopback connections (as the bench's throw-away server does)."""
    from sqlalchemy.engine import make_url

    url = make_url(sqlalchemy_url).set(drivername="postgresql")
    if url.password is None:
        url = url.set(password="bench")
    return url.render_as_string(hide_password=False)


def run(sqlalchemy_url: str, passes: dict[str, list[dict[str, Any]]], batch: int) -> PeerResult:
    """Load each pass of records with dlt's merge disposition and time it.

    Args:
        sqlalchemy_url: The bench database, as SQLAlchemy spells it.
        passes: Records per pass, in order (``"new"`` first, then ``"changed"``).
        batch: The size of the lists the records are yielded in (as they would arrive).

    Raises:
        PeerSkipped: dlt is not installed or a load failed.
    """
    os.environ.update(_DLT_ENV)
    try:
        import dlt
        from dlt.destinations import postgres
    except ImportError as error:
        raise PeerSkipped(f"dlt not installed ({error}); `pip install -e '.[bench]'`") from error

    dataset = f"bench_dlt_{uuid.uuid4().hex[:8]}"
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="hooksync-bench-dlt-") as pipelines_dir:
        try:
            pipeline = dlt.pipeline(
                pipeline_name="hooksync_bench",
                pipelines_dir=pipelines_dir,
                destination=postgres(credentials=_dlt_credentials(sqlalchemy_url)),
                dataset_name=dataset,
            )
            for name, records in passes.items():

                def chunks(records: list[dict[str, Any]] = records) -> Iterator[Any]:
                    for start in range(0, len(records), batch):
                        yield records[start : start + batch]

                started = time.perf_counter()
                info = pipeline.run(
                    chunks(),
                    table_name="tasks",
                    write_disposition="merge",
                    primary_key="id",
                )
                elapsed = time.perf_counter() - started
                info.raise_on_failed_jobs()
                rates[name] = len(records) / elapsed
            _check_loaded(pipeline, len(next(iter(passes.values()))))
        except PeerSkipped:
            raise
        except Exception as error:  # any dlt failure skips the peer, never the bench
            raise PeerSkipped(f"dlt load failed: {type(error).__name__}: {error}") from error
        finally:
            _drop_dataset(sqlalchemy_url, dataset)
    return PeerResult(rates, dlt.__version__)


def _check_loaded(pipeline: Any, count: int) -> None:
    """A merge that loaded nothing, or duplicated rows, would flatter the peer."""
    with pipeline.sql_client() as client:
        table = client.make_qualified_table_name("tasks")
        rows = client.execute_sql(f"SELECT count(*), count(DISTINCT id), min(status) FROM {table}")
    total, distinct, status = rows[0]
    if total != count or distinct != count or status != "done":
        raise PeerSkipped(
            f"dlt merge left {total} rows ({distinct} distinct ids, status {status!r}); "
            f"expected {count} changed rows"
        )


def _drop_dataset(sqlalchemy_url: str, dataset: str) -> None:
    """Drop the dataset's schema and dlt's staging schema beside it."""
    from sqlalchemy import create_engine, text

    engine = create_engine(sqlalchemy_url)
    try:
        with engine.begin() as conn:
            for schema in (dataset, f"{dataset}_staging"):
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    except Exception:  # best effort: a leftover schema must not hide the figures
        logging.getLogger(__name__).warning("could not drop %s", dataset, exc_info=True)
    finally:
        engine.dispose()
