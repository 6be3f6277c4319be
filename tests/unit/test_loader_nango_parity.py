"""nango.yaml shapes Nango's own tooling reads and PyYAML alone did not.

``${PWD}`` integration keys, model fields typed as inline arrays of objects, and tabs after
values: each loads with the meaning Nango gives it, and what Nango refuses stays an error
naming the file, the keys and the value.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from config.integrations import SyncType
from config.loader import describe, load_integrations
from ingress.integrations import scripts_config
from tests.unit.test_loader import load, only, write

# --- ${PWD}: the folder holding nango.yaml --------------------------------------------

PWD_YAML = """
integrations:
  ${PWD}:
    syncs:
      contacts:
        runs: every 1h
        output: Contact
        webhook-subscriptions: contact.updated
models:
  Contact:
    id: string
"""


def folder(tmp_path: Path, name: str) -> Path:
    """An empty folder named ``name``: the one ``${PWD}`` stands for."""
    path = tmp_path / name
    path.mkdir()
    return path


def test_pwd_integration_key_is_the_folder_name(tmp_path: Path) -> None:
    result = load(folder(tmp_path, "hubspot"), PWD_YAML, scripts=("hubspot/contacts",))

    assert result.errors == ()
    assert list(result.by_key) == ["hubspot"]
    sync = result.by_key["hubspot"].syncs["contacts"]
    assert (sync.integration, sync.interval_seconds, sync.output) == ("hubspot", 3600, ("Contact",))


def test_pwd_is_the_folder_name_when_the_folder_is_given_as_dot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `HOOKSYNC_INTEGRATIONS_DIR=.` run from inside the folder still names it.
    monkeypatch.chdir(write(folder(tmp_path, "crm"), PWD_YAML, scripts=("crm/contacts",)))

    result = load_integrations(Path("."), {})

    assert result.errors == ()
    assert list(result.by_key) == ["crm"]


def test_pwd_in_a_providers_key_names_the_same_integration(tmp_path: Path) -> None:
    text = PWD_YAML + "providers:\n  ${PWD}:\n    base_url: https://api.example.test\n"

    result = load(folder(tmp_path, "hubspot"), text, scripts=("hubspot/contacts",))

    assert result.errors == ()
    assert result.by_key["hubspot"].provider.base_url == "https://api.example.test"


def test_pwd_inside_a_longer_key(tmp_path: Path) -> None:
    text = PWD_YAML.replace("${PWD}:", "${PWD}-sandbox:")

    result = load(folder(tmp_path, "hubspot"), text, scripts=("hubspot-sandbox/contacts",))

    assert result.errors == ()
    assert list(result.by_key) == ["hubspot-sandbox"]


def test_pwd_naming_a_declared_integration_again_is_an_error(tmp_path: Path) -> None:
    text = PWD_YAML.replace("  ${PWD}:", "  hubspot:\n    syncs: {}\n  ${PWD}:")

    result = load(folder(tmp_path, "hubspot"), text, scripts=())

    problem = only(result.errors, "duplicate_key")
    assert problem.path == "integrations.${PWD}"
    assert "'hubspot'" in problem.message and "already declared" in problem.message


def test_pwd_of_a_folder_unusable_as_a_key_is_an_error(tmp_path: Path) -> None:
    result = load(folder(tmp_path, "my crm"), PWD_YAML, scripts=())

    problem = only(result.errors, "invalid_name")
    assert problem.path == "integrations.${PWD}"
    assert "'my crm'" in problem.message and "rename the folder" in problem.message
    assert result.by_key == {}


# --- model fields typed as inline arrays ----------------------------------------------

ARRAY_MODELS_YAML = """
integrations:
  myapi:
    syncs:
      contacts:
        runs: every 1h
        output: Contact
        input: Filter
models:
  Filter:
    ids: [{id: string}]
  Base:
    labels: [{name: string}]
  Contact:
    __extends: Base
    id: string
    tags: [{id: string, name: string}]
    items: [{sub: [{x: number}]}]
    notes?: [{id: string, label?: string}]
    either: [string, number]
"""


def test_inline_arrays_of_objects_load_as_arrays_of_those_objects(tmp_path: Path) -> None:
    result = load(tmp_path, ARRAY_MODELS_YAML)

    assert result.errors == ()
    contact = result.models["Contact"]
    assert contact.fields == {
        "labels": [{"name": "string"}],  # through __extends
        "id": "string",
        "tags": [{"id": "string", "name": "string"}],
        "items": [{"sub": [{"x": "number"}]}],
        # The field's `?` makes it optional; an item's own `label?` is kept as written,
        # as literal objects' keys are.
        "notes": [{"id": "string", "label?": "string"}],
        # A list of several entries is an array of any of them, as Nango reads it.
        "either": ["string", "number"],
    }
    assert contact.optional == frozenset({"notes"})
    assert result.by_key["myapi"].syncs["contacts"].output == ("Contact",)


def test_inline_array_fields_reach_the_scripts_config(tmp_path: Path) -> None:
    result = load(tmp_path, ARRAY_MODELS_YAML)

    (config,) = scripts_config(result.by_key.values(), result.models)
    (sync,) = config["syncs"]
    fields = {field["name"]: field for field in sync["models"][0]["fields"]}
    assert fields["tags"] == {"name": "tags", "type": [{"id": "string", "name": "string"}]}
    assert fields["notes"] == {
        "name": "notes",
        "type": [{"id": "string", "label?": "string"}],
        "optional": True,
    }
    assert sync["input"]["fields"] == [{"name": "ids", "type": [{"id": "string"}]}]


# --- tabs after values ---------------------------------------------------------------

TABS_YAML = (
    "integrations:\n"
    "  myapi:\n"
    "    syncs:\n"
    "      contacts:\n"
    "        runs: every hour\t\n"
    "        sync_type: incremental\t# polls what changed\n"
    "        track_deletes: true\t\t# comment\n"
    "        auto_start: false\t\n"
    "        output: Contact\t\n"
    '        description: "Every\tcontact"\t\n'
    "        webhook-subscriptions: [contact.created,\tcontact.updated]\t\n"
    "models:\n"
    "  Contact:\n"
    "    id: string\t\n"
    "    tags: [{id: string,\tname: string}]\t# inline array of objects\n"
)


def test_tabs_after_values_load_as_nango_reads_them(tmp_path: Path) -> None:
    result = load(tmp_path, TABS_YAML)

    assert result.errors == ()
    assert describe(result)["integrations"]["myapi"]["syncs"]["contacts"] == {
        "runs": "every hour",
        "interval_seconds": 3600,
        "sync_type": SyncType.INCREMENTAL,
        "track_deletes": True,
        "auto_start": False,
        "webhook_subscriptions": ["contact.created", "contact.updated"],
        "output": ["Contact"],
    }
    # A tab inside a quoted string is part of the value.
    assert result.by_key["myapi"].syncs["contacts"].description == "Every\tcontact"
    assert result.models["Contact"].fields == {
        "id": "string",
        "tags": [{"id": "string", "name": "string"}],
    }


def test_a_tab_inside_an_unquoted_value_is_kept(tmp_path: Path) -> None:
    text = TABS_YAML.replace('"Every\tcontact"', "Every\tcontact")

    result = load(tmp_path, text)

    assert result.by_key["myapi"].syncs["contacts"].description == "Every\tcontact"


def test_tab_indentation_is_an_error_naming_the_file_line_and_text(tmp_path: Path) -> None:
    text = TABS_YAML.replace("        output: Contact\t\n", "\t\toutput: Contact\n")

    result = load(tmp_path, text)

    problem = only(result.errors, "yaml_syntax")
    assert str(problem).startswith("nango.yaml: invalid YAML at line 9, column 1: ")
    assert "a tab is used for indentation" in problem.message
    assert repr("\t\toutput: Contact") in problem.message
    assert result.by_key == {}


def test_a_value_nango_refuses_still_names_its_keys_and_value(tmp_path: Path) -> None:
    text = TABS_YAML.replace("every hour\t", "every fortnight\t")

    result = load(tmp_path, text)

    problem = only(result.errors, "invalid_frequency")
    assert problem.path == "integrations.myapi.syncs.contacts.runs"
    assert "'every fortnight'" in problem.message


def test_a_sync_given_twice_is_an_error_as_in_nango(tmp_path: Path) -> None:
    text = TABS_YAML.replace("        runs: every hour\t\n", "        runs: every hour\t\n" * 2)

    result = load(tmp_path, text)

    problem = only(result.errors, "yaml_syntax")
    assert str(problem).startswith("nango.yaml: invalid YAML at line 6, column 9: ")
    assert "found duplicate key 'runs'" in problem.message
