"""The ordered delivery stream key and the send lease's relation to the POST timeout."""

from __future__ import annotations

from workers.app_webhooks import forward_body, stream_key, sync_envelope
from workers.delivery import TIMEOUT_SECONDS
from workers.outbox import SEND_LEASE_SECONDS

URL = "https://app.example/hooks?token=s3cret"


def _sync(model: str | None, connection_id: str = "acme", **extra: object) -> dict[str, object]:
    envelope = sync_envelope(
        connection_id=connection_id,
        provider_config_key="tracker",
        sync_name="tasks",
        model=model,
        sync_type="INCREMENTAL",
    )
    return {**envelope, **extra}


def test_one_stream_per_url_connection_sync_and_model() -> None:
    key = stream_key(URL, _sync("Task", success=True))
    assert key is not None and len(key) == 64
    # A failure of the same model, or other counts, are the same stream.
    assert stream_key(URL, _sync("Task", success=False, error={"type": "x"})) == key
    assert stream_key(URL, _sync("Task", responseResults={"added": 9})) == key
    others = {
        stream_key(URL, _sync("Note")),
        stream_key(URL, _sync(None)),
        stream_key(URL, _sync("Task", connection_id="globex")),
        stream_key("https://other.example/hooks", _sync("Task")),
    }
    assert key not in others and len(others) == 4


def test_forwards_are_not_ordered_and_the_key_hides_the_url() -> None:
    assert stream_key(URL, forward_body("tracker", "acme", {"a": 1})) is None
    assert "s3cret" not in (stream_key(URL, _sync("Task")) or "")


def test_a_dead_sender_is_replaced_within_15_seconds_at_the_default_tick() -> None:
    # The lease outlives a POST (so a slow answer is not sent twice), and lease + the
    # default 5 s tick is the recovery bound the README states.
    assert TIMEOUT_SECONDS < SEND_LEASE_SECONDS <= 10
