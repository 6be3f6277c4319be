"""Merge rules of the records cache (pure): canonical JSON, validation, strategies, decide."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cache.merge import (
    Action,
    MergeStrategy,
    Operation,
    StoredState,
    canonical_json,
    decide,
    deep_merge,
    hash_payload,
    is_older,
    parse_strategy,
    split_duplicates,
    validate_batch,
)
from config.errors import BadInputError

OVERRIDE = MergeStrategy()
IGNORE = MergeStrategy("ignore_if_modified_after")
NEWEST = MergeStrategy("newest_wins", "updated_at")

# --- canonical JSON -------------------------------------------------------------------


def test_canonical_json_sorts_keys_compactly_and_keeps_unicode() -> None:
    assert canonical_json({"b": 1, "a": {"d": [1, 2], "c": "é"}}) == (
        '{"a":{"c":"é","d":[1,2]},"b":1}'
    )


def test_same_content_in_any_key_order_has_one_hash() -> None:
    first = canonical_json({"id": 1, "x": {"p": 1, "q": 2}})
    second = canonical_json({"x": {"q": 2, "p": 1}, "id": 1})
    assert hash_payload(first) == hash_payload(second)
    assert hash_payload(first) != hash_payload(canonical_json({"id": 1, "x": {"p": 1}}))
    assert len(hash_payload(first)) == 64


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_canonical_json_round_trips(value: object) -> None:
    assert json.loads(canonical_json(value)) == value


# --- deep merge -----------------------------------------------------------------------


def test_deep_merge_merges_objects_and_replaces_arrays() -> None:
    old = {"id": 1, "a": {"x": 1, "y": {"k": 1}}, "tags": [1, 2, 3], "keep": True}
    new = {"a": {"y": {"j": 2}, "z": 3}, "tags": [9]}
    assert deep_merge(old, new) == {
        "id": 1,
        "a": {"x": 1, "y": {"k": 1, "j": 2}, "z": 3},
        "tags": [9],
        "keep": True,
    }
    assert old["tags"] == [1, 2, 3], "inputs are not mutated"
    assert old["a"]["y"] == {"k": 1}


def test_deep_merge_replaces_an_object_with_a_scalar_and_back() -> None:
    assert deep_merge({"a": {"x": 1}}, {"a": None}) == {"a": None}
    assert deep_merge({"a": 5}, {"a": {"x": 1}}) == {"a": {"x": 1}}


# --- validation -----------------------------------------------------------------------


def test_validate_batch_prepares_records() -> None:
    prepared = validate_batch([{"id": 7, "n": "x"}, {"id": "a"}], "Task")
    assert [p.external_id for p in prepared] == ["7", "a"]
    assert prepared[0].payload == '{"id":7,"n":"x"}'
    assert prepared[0].data_hash == hash_payload(prepared[0].payload)
    assert prepared[1].index == 1


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"name": "no id"}, "records[1].id: must be a string or integer, got None"),
        ({"id": None}, "records[1].id: must be a string or integer, got None"),
        ({"id": True}, "records[1].id: must be a string or integer, got True"),
        ({"id": 1.5}, "records[1].id: must be a string or integer, got 1.5"),
        ({"id": ""}, "records[1].id: must not be empty"),
        ({"id": "x" * 256}, "records[1].id: is 256 characters long"),
        ("not a dict", "records[1]: must be a dict, got 'not a dict'"),
        ({"id": 1, "v": math.nan}, "records[1]: not JSON-serialisable"),
        ({"id": 1, "v": math.inf}, "records[1]: not JSON-serialisable"),
        ({"id": 1, "v": {1, 2}}, "records[1]: not JSON-serialisable"),
        ({"id": 1, "v": object()}, "records[1]: not JSON-serialisable"),
    ],
)
def test_a_bad_record_rejects_the_batch_naming_index_and_reason(record: object, message: str):
    with pytest.raises(BadInputError) as caught:
        validate_batch([{"id": 1}, record, {"id": 3}], "Task")
    assert message in str(caught.value)


def test_record_size_limit_counts_utf8_bytes_of_canonical_json() -> None:
    record = {"id": 1, "v": "é" * 40}  # 80 bytes of "é", 48 characters more of JSON
    size = len(canonical_json(record).encode())
    assert validate_batch([record], "Task", max_record_bytes=size)
    with pytest.raises(BadInputError, match=rf"records\[0\]: canonical JSON is {size} bytes"):
        validate_batch([record], "Task", max_record_bytes=size - 1)


@pytest.mark.parametrize("model", ["", "   ", None, 5])
def test_model_must_be_a_non_empty_string(model: object) -> None:
    with pytest.raises(BadInputError, match="model must be a non-empty string"):
        validate_batch([{"id": 1}], model)


@pytest.mark.parametrize("records", [{"id": 1}, "abc", None, 5])
def test_records_must_be_a_list(records: object) -> None:
    with pytest.raises(BadInputError, match="records must be a list"):
        validate_batch(records, "Task")


def test_duplicates_keep_the_first_and_list_the_rest() -> None:
    prepared = validate_batch(
        [{"id": 1, "v": "first"}, {"id": "1", "v": "second"}, {"id": 2}, {"id": 1}], "Task"
    )
    unique, duplicates = split_duplicates(prepared)
    assert [(p.external_id, p.record.get("v")) for p in unique] == [("1", "first"), ("2", None)]
    assert duplicates == ["1", "1"]


# --- strategies -----------------------------------------------------------------------


def test_parse_strategy_accepts_dicts_names_and_instances() -> None:
    assert parse_strategy({"strategy": "override"}) == OVERRIDE
    assert parse_strategy("ignore_if_modified_after") == IGNORE
    assert parse_strategy({"strategy": "newest_wins", "field": "updated_at"}) == NEWEST
    assert parse_strategy(NEWEST) is NEWEST


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"strategy": "latest"}, "merging strategy 'latest' is unknown"),
        ("latest", "merging strategy 'latest' is unknown"),
        ({}, "needs 'strategy' to be one of"),
        ({"strategy": 3}, "got 3"),
        ({"strategy": "newest_wins"}, "'newest_wins' needs a non-empty string 'field'"),
        ({"strategy": "newest_wins", "field": ""}, "needs a non-empty string 'field'"),
        ({"strategy": "override", "field": "x"}, "takes no 'field'"),
        ({"strategy": "override", "mode": "x"}, "unknown key(s) mode"),
        (["override"], "must be a dict"),
        (None, "must be a dict"),
    ],
)
def test_parse_strategy_rejects_bad_values_naming_them(value: object, message: str) -> None:
    with pytest.raises(BadInputError) as caught:
        parse_strategy(value)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("incoming", "stored", "older"),
    [
        ("2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", True),
        ("2026-01-02T00:00:00Z", "2026-01-01T00:00:00Z", False),
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00+00:00", False),  # equal
        ("2026-01-01T01:00:00+02:00", "2026-01-01T00:00:00Z", True),  # 23:00 the day before
        ("2026-01-01T00:00:00", "2026-01-01T00:00:01Z", True),  # naive is UTC
        (1, 2, True),
        (2.5, 2, False),
        (10**20, 10**20 + 1, True),  # big ints compare exactly
        (None, "2026-01-01T00:00:00Z", False),
        ("2026-01-01T00:00:00Z", None, False),
        ("yesterday", "2026-01-01T00:00:00Z", False),
        (1, "2026-01-01T00:00:00Z", False),  # incomparable
        (True, 5, False),
        (math.nan, 5, False),
    ],
)
def test_is_older(incoming: object, stored: object, older: bool) -> None:
    assert is_older(incoming, stored) is older


# --- decide ---------------------------------------------------------------------------

LIVE = StoredState(data_hash="h1", is_deleted=False, mod_seq=10)
DEAD = StoredState(data_hash="h1", is_deleted=True, mod_seq=10)


@pytest.mark.parametrize(
    ("operation", "stored", "incoming_hash", "action"),
    [
        (Operation.SAVE, None, "h1", Action.INSERT),
        (Operation.SAVE, LIVE, "h1", Action.UNCHANGED),
        (Operation.SAVE, LIVE, "h2", Action.UPDATE),
        (Operation.SAVE, DEAD, "h1", Action.UNDELETE),
        (Operation.SAVE, DEAD, "h2", Action.UNDELETE),
        (Operation.UPDATE, None, "h1", Action.IGNORE),
        (Operation.UPDATE, DEAD, "h2", Action.IGNORE),
        (Operation.UPDATE, LIVE, "h1", Action.UNCHANGED),
        (Operation.UPDATE, LIVE, "h2", Action.UPDATE),
        (Operation.DELETE, None, "h1", Action.IGNORE),
        (Operation.DELETE, DEAD, "h1", Action.IGNORE),
        (Operation.DELETE, LIVE, "h1", Action.DELETE),
    ],
)
def test_decide_under_override(
    operation: Operation, stored: StoredState | None, incoming_hash: str, action: Action
) -> None:
    assert decide(operation, stored, incoming_hash, strategy=OVERRIDE, cursor_seq=None) is action


@pytest.mark.parametrize("operation", list(Operation))
def test_ignore_if_modified_after_keeps_records_modified_after_the_cursor(
    operation: Operation,
) -> None:
    assert decide(operation, LIVE, "h2", strategy=IGNORE, cursor_seq=9) is Action.SKIP
    assert decide(operation, LIVE, "h2", strategy=IGNORE, cursor_seq=10) is not Action.SKIP


def test_ignore_if_modified_after_always_inserts_new_records() -> None:
    assert decide(Operation.SAVE, None, "h", strategy=IGNORE, cursor_seq=0) is Action.INSERT


def test_ignore_if_modified_after_keeps_a_deleted_record_deleted() -> None:
    dead_later = StoredState(data_hash="h1", is_deleted=True, mod_seq=12)
    assert decide(Operation.SAVE, dead_later, "h2", strategy=IGNORE, cursor_seq=11) is Action.SKIP


def test_ignore_if_modified_after_needs_the_cursor() -> None:
    with pytest.raises(ValueError, match="cursor_seq"):
        decide(Operation.SAVE, LIVE, "h2", strategy=IGNORE, cursor_seq=None)


@pytest.mark.parametrize(
    ("incoming", "stored", "action"),
    [
        ({"updated_at": "2026-01-01T00:00:00Z"}, {"updated_at": "2026-01-02T00:00:00Z"}, "skip"),
        ({"updated_at": "2026-01-03T00:00:00Z"}, {"updated_at": "2026-01-02T00:00:00Z"}, "update"),
        ({"updated_at": "2026-01-02T00:00:00Z"}, {"updated_at": "2026-01-02T00:00:00Z"}, "update"),
        ({}, {"updated_at": "2026-01-02T00:00:00Z"}, "update"),
        ({"updated_at": 3}, {"updated_at": 4}, "skip"),
        ({"updated_at": "garbage"}, {"updated_at": 4}, "update"),
    ],
)
def test_newest_wins(incoming: dict, stored: dict, action: str) -> None:
    got = decide(
        Operation.SAVE,
        LIVE,
        "h2",
        strategy=NEWEST,
        cursor_seq=None,
        incoming=incoming,
        stored_record=stored,
    )
    assert got.value == action


def test_a_replayed_older_state_rolls_back_only_without_newest_wins() -> None:
    # Issue 9: a captured webhook replayed with a new delivery id reaches the script, which
    # saves the older state it carries. Only a strategy comparing the record's own time
    # refuses it; README "Replay safety".
    current = {"id": "7", "title": "new", "updated_at": "2030-01-02T00:00:00Z"}
    replayed = {"id": "7", "title": "old", "updated_at": "2030-01-01T00:00:00Z"}
    replayed_hash = hash_payload(canonical_json(replayed))

    def action(strategy: MergeStrategy) -> Action:
        return decide(
            Operation.SAVE,
            LIVE,
            replayed_hash,
            strategy=strategy,
            cursor_seq=None,
            incoming=replayed,
            stored_record=current,
        )

    assert action(OVERRIDE) is Action.UPDATE  # the rollback
    assert action(NEWEST) is Action.SKIP
