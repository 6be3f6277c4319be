"""The chaos suite's sync (bench/chaos): webhook effects are logged at the external API."""

from __future__ import annotations

from typing import Any


def fetch_data(nango: Any) -> None:
    """The reconciliation: every item of the account as the external API has it now."""
    nango.set_merging_strategy({"strategy": "ignore_if_modified_after"}, "Item")
    items = nango.get(f"/accounts/{nango.connection_id}/items").json()["items"]
    nango.batch_save(items, "Item")


def on_webhook_payload_received(nango: Any, payload: dict[str, Any]) -> None:
    # The effect first: an execution that gets this far has run the handler, and a second
    # execution of the same webhook shows up as a second line of the log.
    nango.post("/effects", json={"delivery": payload["delivery"], "account": payload["account"]})
    item = nango.get(f"/accounts/{payload['account']}/items/{payload['item_id']}").json()
    nango.batch_save([item], "Item")
