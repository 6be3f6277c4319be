"""``GET /records`` parameters that must be a 400, never a 500 (ingress/records.py).

The main records API tests live with the store (tests/integration/test_store.py).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from cache.db import session_scope
from cache.store import RecordStore
from config.context import AppContext
from ingress.errors import register_error_handlers
from ingress.records import bp
from tests.support.rows import insert_connection

HEADERS = {
    "Authorization": "Bearer test-api-key",
    "Connection-Id": "c1",
    "Provider-Config-Key": "tasktracker",
}


@pytest.fixture
def conn(ctx: AppContext) -> int:
    with session_scope(ctx.sessions) as session:
        return insert_connection(session, "tasktracker", "c1").id


@pytest.fixture
def client(ctx: AppContext) -> Iterator[FlaskClient]:
    app = Flask(__name__)
    app.extensions["hooksync"] = ctx
    app.register_blueprint(bp)
    register_error_handlers(app)
    with app.test_client() as test_client:
        yield test_client


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_modified_after_outside_the_utc_range_is_400_not_500(
    client: FlaskClient, conn: int, value: str
) -> None:
    response = client.get(
        "/records", query_string={"model": "Task", "modified_after": value}, headers=HEADERS
    )
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invalid_parameter"
    assert error["field"] == "modified_after"
    assert repr(value) in error["message"]


def test_modified_after_with_an_offset_is_compared_in_utc(
    client: FlaskClient, ctx: AppContext, conn: int
) -> None:
    RecordStore(ctx.sessions, cursor_key=ctx.settings.secret_key).save(conn, "Task", [{"id": 1}])
    response = client.get(
        "/records",
        query_string={"model": "Task", "modified_after": "2000-01-01T05:00:00+05:00"},
        headers=HEADERS,
    )
    assert response.status_code == 200
    assert [r["id"] for r in response.get_json()["records"]] == ["1"]
