"""kombu's Redis transport, made to survive a broker restart; every Celery app of ours uses it.

The failure it fixes (kombu 5.7): Redis dies (``kill -9``) while the worker holds a message
unacknowledged (``acks_late``: a task running) and waits in BRPOP for the next one (a free
pool slot). Another of its connections notices first (typically the pub/sub one of Celery's
remote control), and Celery drops the broken broker connection in two steps:

1. ``Connection.collect()`` closes the consumer's channel. kombu's ``Channel.close`` first
   reads the reply of the pending BRPOP, which raises the connection error, so the close
   stops before restoring the unacknowledged message; ``collect()`` swallows the error and
   detaches the transport from its connection (``transport.client = None``).
2. ``Connection.close()`` closes that channel again, and this time it restores the message:
   it builds a Redis pool from ``transport.client``, now None, and raises ``AttributeError:
   'NoneType' object has no attribute 'hostname'``. That is not one of the transport's
   connection errors, so Celery logs "Unrecoverable error" and the worker process exits.

Our ``Channel`` fixes both steps:

* ``close`` reads the pending BRPOP reply itself and ignores a connection error there (there
  is no reply from a dead server), so step 1 closes the channel completely, exactly as when
  no BRPOP was pending: it tries to restore the unacknowledged messages while the transport
  is still attached (a connection error if Redis is still down, swallowed by kombu), and the
  pool it makes for that later carries the running task's ack to the restarted Redis.
* ``_connparams`` raises ``redis.ConnectionError`` instead of the ``AttributeError`` if a
  channel still needs a pool once its transport was detached: what a closing channel raises
  when Redis is merely down, which kombu and Celery's reconnect loop treat as a lost broker.

Messages a failed restore leaves behind are not lost: they stay in kombu's ``unacked`` hash,
which a worker's channel puts back on the queue once the visibility timeout lapses
(``workers.celery_app``); before that the scheduler's lease sweeper re-sends any run or
notification whose message went missing, and a redelivered message is harmless (claims are
conditional on the row's state).

It is wired in without patching kombu: Celery makes every broker connection with
``app.amqp.Connection`` (``make_celery`` passes ``amqp=BrokerAMQP``), and
``BrokerConnection`` resolves kombu's Redis transport to ours. Celery's ``broker_transport``
setting would not do: kombu ignores it for a URL with a ``+`` in its scheme, such as the
embedded Redis's ``redis+socket://``, and it would show in every logged broker URL.
"""

from __future__ import annotations

from queue import Empty
from typing import Any

import redis
from celery.app.amqp import AMQP
from kombu import Connection
from kombu.transport import redis as kombu_redis

__all__ = ["BrokerAMQP", "BrokerConnection", "Channel", "Transport"]


class Channel(kombu_redis.Channel):
    """kombu's Redis channel that closes completely when the broker died mid-BRPOP."""

    def close(self) -> None:
        if self._in_poll and not self.closed:
            # kombu's close reads the pending BRPOP's reply but lets a connection error out,
            # skipping the rest of the close: the restore of the unacknowledged messages,
            # which then happens on a second close, after the transport was detached.
            try:
                self._brpop_read()
            except Empty:
                pass
            except self.connection_errors:
                pass  # the server is gone: no reply to read (and the socket is closed)
        super().close()

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        transport = self.connection
        if transport is None or transport.client is None:
            # The channel outlived its connection (see the module's docstring): a recoverable
            # error, as if Redis were down, instead of kombu's AttributeError.
            raise redis.ConnectionError("the broker connection of this channel is closed")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)
        return params


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with our ``Channel``."""

    Channel = Channel


class BrokerConnection(Connection):
    """A kombu ``Connection`` that uses our ``Transport`` wherever kombu would use its Redis one.

    Whatever the URL: ``redis://``, ``rediss://`` and ``redis+socket://`` all resolve to
    kombu's ``Transport`` class. ``transport_cls`` keeps kombu's name, so logged URLs and
    clones (``Connection.clone`` keeps the class) stay as they were.
    """

    def get_transport_cls(self) -> type:
        transport_cls: type = super().get_transport_cls()
        return Transport if transport_cls is kombu_redis.Transport else transport_cls


class BrokerAMQP(AMQP):
    """Celery's AMQP helper making every broker connection a ``BrokerConnection``."""

    Connection = BrokerConnection
    BrokerConnection = BrokerConnection
