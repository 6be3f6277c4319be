"""The shared handles a process needs, built lazily from settings.

Ingress and workers both take an ``AppContext``: nothing connects at import time, the
webhook receiver never touches the database (it never asks for ``sessions``), and tests
build one per test against their own Redis and database.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import Any, TypeVar, cast

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from cache.db import make_engine, make_sessionmaker
from config.integrations import Integrations
from config.loader import load_integrations_or_raise
from config.redis_server import ensure_embedded_redis
from config.settings import Settings

__all__ = ["AppContext"]

T = TypeVar("T")


#: How often a process looks at ``nango.yaml`` for changes (``AppContext.integrations``).
INTEGRATIONS_RECHECK_SECONDS = 1.0


def _file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None  # the loader reports the missing file
    return (stat.st_mtime_ns, stat.st_size)


class AppContext:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._integrations: tuple[tuple[int, int] | None, Integrations] | None = None
        self._integrations_checked = 0.0
        self._handles: dict[str, Any] = {}
        self._closers: list[Callable[[], object]] = []

    def handle(
        self, key: str, build: Callable[[], T], *, close: Callable[[T], object] | None = None
    ) -> T:
        """A per-process handle an upper layer keeps on the context (its Celery app, its
        delivery threads, …): built on first use, released by ``close()`` with ``close``.

        This module knows none of them; each is named by the module that owns it.
        """
        if key not in self._handles:
            value = self._handles.setdefault(key, build())
            if close is not None:
                self._closers.append(lambda: close(value))
        return cast(T, self._handles[key])

    @cached_property
    def redis_url(self) -> str:
        if self.settings.redis_url:
            return self.settings.redis_url
        return ensure_embedded_redis(self.settings.var_dir)

    @cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=5)

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.engine)

    @property
    def integrations(self) -> Integrations:
        """The parsed ``nango.yaml``, loaded once and again whenever the file changes.

        Processes live long and the file is edited in place (a new sync, a new webhook
        subscription), so the file's modification time and size are checked at most once per
        ``INTEGRATIONS_RECHECK_SECONDS``; between checks this costs nothing.

        Raises:
            ConfigError: The file (as it is now) has errors.
        """
        now = time.monotonic()
        cached = self._integrations
        if cached is not None and now < self._integrations_checked + INTEGRATIONS_RECHECK_SECONDS:
            return cached[1]
        stamp = _file_stamp(self.settings.integrations_dir / "nango.yaml")
        if cached is None or cached[0] != stamp:
            cached = (stamp, load_integrations_or_raise(self.settings.integrations_dir, os.environ))
            self._integrations = cached
        self._integrations_checked = now
        return cached[1]

    def pin_integrations(self, integrations: Integrations) -> None:
        """Use ``integrations`` from now on and never reload (tests, one-off tools)."""
        self._integrations = (None, integrations)
        self._integrations_checked = float("inf")

    def close(self) -> None:
        """Release the handles and pooled connections (tests and forked workers)."""
        closers, self._closers, self._handles = self._closers, [], {}
        for closer in reversed(closers):
            closer()
        if "engine" in self.__dict__:
            self.engine.dispose()
        if "redis" in self.__dict__:
            self.redis.close()
