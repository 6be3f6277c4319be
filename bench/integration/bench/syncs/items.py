"""The load benchmarks' sync: each webhook saves one record; the poll saves nothing."""

from __future__ import annotations

from typing import Any


def fetch_data(nango: Any) -> None:
    """Nothing to poll: the benchmark measures the webhook path."""


def on_webhook_payload_received(nango: Any, payload: dict[str, Any]) -> None:
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
