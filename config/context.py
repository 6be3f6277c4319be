"""The shared handles a process needs, built lazily from settings.

Ingress and workers both take an ``AppContext``: nothing connects at import time, the
webhook receiver never touches the database (it never asks for ``sessions``), and tests
build one per test against their own Redis and database.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

import redis

from config.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from config.integrations import Integrations

__all__ = ["AppContext"]


class AppContext:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def redis_url(self) -> str:
        if self.settings.redis_url:
            return self.settings.redis_url
        from config.redis_server import ensure_embedded_redis

        return ensure_embedded_redis(self.settings.var_dir)

    @cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url, socket_timeout=5, socket_connect_timeout=5)

    @cached_property
    def engine(self) -> Engine:
        from cache.db import make_engine

        return make_engine(self.settings.database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        from cache.db import make_sessionmaker

        return make_sessionmaker(self.engine)

    @cached_property
    def integrations(self) -> Integrations:
        import os

        from config.loader import load_integrations_or_raise

        return load_integrations_or_raise(self.settings.integrations_dir, os.environ)

    def close(self) -> None:
        """Release pooled connections (tests and forked workers)."""
        # The Celery app workers.celery_app.celery_for() cached here holds broker sockets.
        celery_app = self.__dict__.pop("celery_app", None)
        if celery_app is not None:
            celery_app.close()
        if "engine" in self.__dict__:
            self.engine.dispose()
        if "redis" in self.__dict__:
            self.redis.close()
