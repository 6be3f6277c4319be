"""The scale-out benchmark's sync: each webhook waits on the slow API, then saves one record."""

from __future__ import annotations

from typing import Any


def fetch_data(nango: Any) -> None:
    """Nothing to poll: the benchmark measures the webhook path."""


def on_webhook_payload_received(nango: Any, payload: dict[str, Any]) -> None:
    # The external call is the point: ~50 ms of waiting per webhook (bench/slow_api.py).
    nango.get(f"/items/{payload['item_id']}")
    nango.batch_save(
        [
            {
                "id": str(payload["item_id"]),
                "account": payload["account"],
                "seq": payload["seq"],
                "sent_at": payload["sent_at"],
            }
        ],
        "Item",
    )
