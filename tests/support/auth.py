"""The API key of the test settings and the ``Authorization`` header that carries it."""

from __future__ import annotations

#: ``HOOKSYNC_SECRET_KEY`` in the environment ``make_env`` builds (tests/conftest.py).
API_KEY = "test-api-key"


def bearer(api_key: str) -> dict[str, str]:
    """The headers of a request to hooksync's API made with ``api_key``."""
    return {"Authorization": f"Bearer {api_key}"}


#: The headers of an API request authorized with the test settings' key.
AUTH = bearer(API_KEY)
