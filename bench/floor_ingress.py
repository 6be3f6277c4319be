"""The ingress benchmark's floor: a bare Flask endpoint that only pushes the body to Redis.

    gunicorn <the settings `hooksync web` uses> 'bench.floor_ingress:create_app()'

``POST /webhook/<key>`` LPUSHes the raw request body onto ``bench:floor`` in the Redis named
by ``BENCH_REDIS_URL`` (the same embedded server the real receiver uses) and answers 202
once Redis acknowledged it. No signature, no parsing, no Celery message: what is left is
gunicorn, Flask's routing and one Redis write, the least a receiver that stores each
webhook before answering can do.
"""

from __future__ import annotations

import os

import redis
from flask import Flask, Response, request

#: The list the floor pushes to.
QUEUE = "bench:floor"

_ACCEPTED = b'{"status":"accepted"}'


def create_app() -> Flask:
    client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"], socket_timeout=5)
    app = Flask("bench_floor_ingress")

    @app.post("/webhook/<key>")
    def receive(key: str) -> Response:
        client.lpush(QUEUE, request.get_data())
        return Response(_ACCEPTED, status=202, mimetype="application/json")

    return app
