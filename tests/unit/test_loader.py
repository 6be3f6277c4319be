"""The integrations file loader: real Nango templates, every check, and ``describe``."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.integrations import (
    AuthConfig,
    ConnectionRoute,
    FieldRef,
    Integrations,
    Problem,
    ProviderConfig,
    SignatureConfig,
)
from config.loader import describe, load_integrations, load_integrations_or_raise
from tests.support.paths import REPO

FIXTURES = Path(__file__).parent / "fixtures" / "nango"

BASE = """
integrations:
  myapi:
    syncs:
      contacts:
        runs: every 1h
        output: Contact
        webhook-subscriptions: contact.updated
models:
  Contact:
    id: string
"""


def write(folder: Path, text: str, scripts: tuple[str, ...] = ("myapi/contacts",)) -> Path:
    """Write nango.yaml (dedented) and empty scripts ``<integration>/<sync>`` into folder."""
    (folder / "nango.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    for script in scripts:
        integration, sync = script.split("/")
        path = folder / integration / "syncs" / f"{sync}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("def fetch_data(nango):\n    pass\n", encoding="utf-8")
    return folder


def load(folder: Path, text: str, env: dict[str, str] | None = None, **kw: object) -> Integrations:
    return load_integrations(write(folder, text, **kw), env or {})  # type: ignore[arg-type]


def only(problems: tuple[Problem, ...], code: str) -> Problem:
    matching = [p for p in problems if p.code == code]
    assert len(matching) == 1, problems
    return matching[0]


def with_provider(provider: str) -> str:
    return BASE + "providers:\n  myapi:\n" + textwrap.indent(textwrap.dedent(provider), "    ")


# --- real nango.yaml files from Nango's public integration templates ------------------


@pytest.mark.parametrize("name", ["hubspot", "github", "calendly"])
def test_real_nango_templates_load_unchanged(tmp_path: Path, name: str) -> None:
    shutil.copy(FIXTURES / f"{name}.yaml", tmp_path / "nango.yaml")
    result = load_integrations(tmp_path, {})
    assert result.by_key[name].syncs
    assert [p for p in result.errors if p.code != "script_missing"] == []
    # Every sync lacks its script in the temp folder, and nothing else is wrong.
    assert {p.path for p in result.errors} == {
        f"integrations.{name}.syncs.{sync}" for sync in result.by_key[name].syncs
    }
    assert only(result.warnings, "ignored_section").path == f"integrations.{name}.actions"


def test_hubspot_template_values(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "hubspot.yaml", tmp_path / "nango.yaml")
    result = load_integrations(tmp_path, {})
    users = result.get_sync("hubspot", "users")
    assert users is not None
    assert users.runs == "every day"
    assert users.interval_seconds == 86_400
    assert users.sync_type == "full"
    assert users.version == "1.0.1"
    assert users.output == ("User",)
    assert users.endpoints == ({"method": "GET", "path": "/users"},)
    assert users.scopes == (
        "settings.users.read (standard scope)",
        "crm.objects.users.read (granular scope)",
    )
    assert users.auto_start is True
    assert users.description == "Fetches a list of users from Hubspot"
    tickets = result.get_sync("hubspot", "service-tickets")
    assert tickets is not None and tickets.interval_seconds == 1800
    # Integrations without a providers entry get the defaults.
    assert result.by_key["hubspot"].provider == ProviderConfig(key="hubspot")


def test_hubspot_template_models_extend_and_mark_optional(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "hubspot.yaml", tmp_path / "nango.yaml")
    models = load_integrations(tmp_path, {}).models
    changed = models["ChangedRoleResponse"]
    assert "__extends" not in changed.fields
    # Parent fields come in; the child's own `firstName?` overrides the parent's required one.
    assert changed.fields["superAdmin"] == "boolean"
    assert changed.fields["roleIds"] == "string[]"
    assert {"firstName", "lastName", "primaryTeamId", "sendWelcomeEmail"} <= changed.optional
    assert "id" not in changed.optional
    assert models["User"].optional == frozenset({"primaryTeamId"})
    assert models["Property"].fields["modificationMetadata"] == {
        "archivable": "boolean",
        "readOnlyDefinition": "boolean",
        "readOnlyValue": "boolean",
    }


def test_github_template_values(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "github.yaml", tmp_path / "nango.yaml")
    result = load_integrations(tmp_path, {})
    lite = result.get_sync("github", "issues-lite")
    files = result.get_sync("github", "list-files")
    assert lite is not None and files is not None
    assert lite.auto_start is False
    assert lite.scopes == ("public_repo",)
    assert files.input == "GithubIssueRepoInput"
    assert files.endpoints == ({"method": "GET", "path": "/files", "group": "Files"},)
    assert result.models["Issue"].fields["title"] == "string"  # via __extends: GithubIssue


def test_template_with_scripts_present_has_no_errors(tmp_path: Path) -> None:
    shutil.copy(FIXTURES / "calendly.yaml", tmp_path / "nango.yaml")
    for sync in ("events", "event-types", "event-invitees", "users"):
        write(tmp_path, (FIXTURES / "calendly.yaml").read_text(), (f"calendly/{sync}",))
    result = load_integrations(tmp_path, {})
    assert result.errors == ()
    users = result.get_sync("calendly", "users")
    assert users is not None and users.track_deletes is True


def test_bundled_example_integration_loads(tmp_path: Path) -> None:
    env = {"TASKTRACKER_BASE_URL": "http://127.0.0.1:9000", "TASKTRACKER_WEBHOOK_SECRET": "x"}
    result = load_integrations(REPO / "integrations", env)
    assert result.errors == ()
    assert result.by_key


# --- the file -------------------------------------------------------------------------


def test_missing_file_is_an_error_not_an_exception(tmp_path: Path) -> None:
    result = load_integrations(tmp_path, {})
    problem = only(result.errors, "file_missing")
    assert "nango.yaml" in problem.message
    assert result.by_key == {}


def test_yaml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    result = load(tmp_path, "integrations:\n  myapi:\n    syncs: [unclosed\n")
    problem = only(result.errors, "yaml_syntax")
    assert "line 4" in problem.message and "column" in problem.message


def test_root_must_be_a_mapping(tmp_path: Path) -> None:
    result = load(tmp_path, "- just\n- a list\n")
    assert only(result.errors, "invalid_type").message.startswith("expected a mapping")


# --- syncs ----------------------------------------------------------------------------


def test_minimal_sync_defaults(tmp_path: Path) -> None:
    result = load(tmp_path, BASE)
    assert result.errors == ()
    sync = result.get_sync("myapi", "contacts")
    assert sync is not None
    assert sync.integration == "myapi"
    assert sync.interval_seconds == 3600
    assert sync.sync_type == "full"
    assert sync.track_deletes is False
    assert sync.auto_start is True
    assert sync.webhook_subscriptions == ("contact.updated",)
    assert sync.is_subscribed_to("contact.updated")


def test_a_sync_without_sync_type_is_full_as_in_nango(tmp_path: Path) -> None:
    # Nango's nango.yaml parser makes a sync `full` unless it says `incremental`.
    assert "sync_type" not in BASE
    result = load(tmp_path, BASE)
    assert result.errors == ()
    sync = result.get_sync("myapi", "contacts")
    assert sync is not None and sync.sync_type == "full"
    # Saying so explicitly still gives an incremental sync.
    incremental = BASE.replace("runs: every 1h", "runs: every 1h\n        sync_type: incremental")
    sync = load(tmp_path, incremental).get_sync("myapi", "contacts")
    assert sync is not None and sync.sync_type == "incremental"


def test_invalid_runs_names_path_and_value(tmp_path: Path) -> None:
    result = load(tmp_path, BASE.replace("every 1h", "evry 1h"))
    problem = only(result.errors, "invalid_frequency")
    assert problem.path == "integrations.myapi.syncs.contacts.runs"
    assert str(problem).startswith(
        "integrations.myapi.syncs.contacts.runs: invalid frequency 'evry 1h'"
    )
    # A sync that cannot be scheduled is left out; the rest of the file still loads.
    assert result.by_key["myapi"].syncs == {}


def test_missing_runs(tmp_path: Path) -> None:
    result = load(tmp_path, BASE.replace("runs: every 1h", "description: no runs"))
    assert only(result.errors, "missing_field").path == "integrations.myapi.syncs.contacts.runs"


@pytest.mark.parametrize(
    ("line", "path", "shown"),
    [
        ("track_deletes: 'yes'", "track_deletes", "'yes'"),
        ("auto_start: 1", "auto_start", "1"),
        ("sync_type: sometimes", "sync_type", "'sometimes'"),
        ("description: 42", "description", "42"),
        ("scopes: {a: b}", "scopes", "{'a': 'b'}"),
        ("webhook-subscriptions: [1]", "webhook-subscriptions[0]", "1"),
        ("endpoint: FETCH /x", "endpoint", "'FETCH'"),
        ("endpoint: GET contacts", "endpoint", "'contacts'"),
    ],
)
def test_bad_sync_values_name_path_and_value(
    tmp_path: Path, line: str, path: str, shown: str
) -> None:
    text = BASE.replace("        webhook-subscriptions: contact.updated\n", "")
    text = text.replace("        runs: every 1h\n", f"        runs: every 1h\n        {line}\n")
    result = load(tmp_path, text)
    assert len(result.errors) == 1, result.errors
    problem = result.errors[0]
    assert problem.path == f"integrations.myapi.syncs.contacts.{path}"
    assert shown in problem.message
    # The sync is still there, with the default in place of the bad value.
    assert result.get_sync("myapi", "contacts") is not None


def test_sync_value_forms(tmp_path: Path) -> None:
    text = BASE.replace(
        "        webhook-subscriptions: contact.updated\n",
        """\
        webhook-subscriptions: ['*']
        sync_type: Incremental
        track_deletes: true
        auto_start: false
        version: 2
        scopes: a, b
        endpoints:
          - /contacts
          - {method: post, path: /contacts/search}
""",
    )
    sync = load(tmp_path, text).get_sync("myapi", "contacts")
    assert sync is not None
    assert sync.webhook_subscriptions == ("*",)
    assert sync.is_subscribed_to("anything")
    assert sync.sync_type == "incremental"
    assert (sync.track_deletes, sync.auto_start) == (True, False)
    assert sync.version == "2"
    assert sync.scopes == ("a", "b")
    assert sync.endpoints == (
        {"method": "GET", "path": "/contacts"},
        {"method": "POST", "path": "/contacts/search"},
    )


def test_unknown_output_model(tmp_path: Path) -> None:
    result = load(tmp_path, BASE.replace("output: Contact", "output: [Contact, Deal]"))
    problem = only(result.errors, "unknown_model")
    assert problem.path == "integrations.myapi.syncs.contacts.output"
    assert "'Deal'" in problem.message


def test_missing_script(tmp_path: Path) -> None:
    result = load(tmp_path, BASE, scripts=())
    problem = only(result.errors, "script_missing")
    assert problem.path == "integrations.myapi.syncs.contacts"
    assert "myapi/syncs/contacts.py" in problem.message


def test_unknown_keys_actions_and_on_events_are_warnings(tmp_path: Path) -> None:
    text = BASE.replace("        runs: every 1h\n", "        runs: every 1h\n        frequncy: x\n")
    text = text.replace(
        "  myapi:\n    syncs:\n",
        "  myapi:\n    on-events:\n      post-connection-creation: [setup]\n"
        "    actions:\n      create: {output: Contact}\n    syncs:\n",
    )
    result = load(tmp_path, text)
    assert result.errors == ()
    codes = sorted((p.code, p.path) for p in result.warnings)
    assert ("ignored_section", "integrations.myapi.actions") in codes
    assert ("ignored_section", "integrations.myapi.on-events") in codes
    assert ("unknown_key", "integrations.myapi.syncs.contacts.frequncy") in codes


def test_unknown_top_level_key_is_a_warning(tmp_path: Path) -> None:
    result = load(tmp_path, BASE + "modles: {}\n")
    problem = only(result.warnings, "unknown_key")
    assert problem.path == "modles"
    assert "did you mean 'models'" in problem.message


def test_v1_style_sync_gets_a_hint(tmp_path: Path) -> None:
    result = load(tmp_path, "integrations:\n  myapi:\n    contacts:\n      runs: every 1h\n")
    assert "v1" in only(result.warnings, "unknown_key").message


def test_unsafe_sync_name_is_rejected(tmp_path: Path) -> None:
    result = load(tmp_path, BASE.replace("contacts:", "../evil:"), scripts=())
    problem = only(result.errors, "invalid_name")
    assert "'../evil'" in problem.message


# --- models ---------------------------------------------------------------------------


def test_extends_comma_list_merges_in_order(tmp_path: Path) -> None:
    text = BASE + textwrap.indent(
        textwrap.dedent(
            """\
            Stamped:
              created_at: string
              note?: string
            Owned:
              owner: string
              note: number
            Deal:
              __extends: Stamped, Owned
              amount?: number
            """
        ),
        "  ",
    )
    deal = load(tmp_path, text).models["Deal"]
    assert deal.fields == {
        "created_at": "string",
        "note": "number",
        "owner": "string",
        "amount": "number",
    }
    # `Owned.note` (required) came after `Stamped.note?`, so `note` is required.
    assert deal.optional == frozenset({"amount"})


def test_extends_unknown_and_cycles(tmp_path: Path) -> None:
    text = BASE + "  A:\n    __extends: B\n  B:\n    __extends: A, Nope\n"
    result = load(tmp_path, text)
    assert "'Nope'" in only(result.errors, "unknown_model").message
    assert only(result.errors, "extends_cycle").path.startswith("models.")
    assert set(result.models) == {"Contact", "A", "B"}


# --- providers ------------------------------------------------------------------------


def test_explicit_provider(tmp_path: Path) -> None:
    text = with_provider(
        """\
        base_url: ${API_URL}
        webhook_secret: ["${NEW_SECRET}", old-secret]
        forward_webhooks: true
        auth: header:X-Api-Key
        webhook:
          signature: {scheme: hmac-sha256, header: X-Signature, encoding: base64, prefix: "v1="}
          event_type: {header: X-Event}
          connection: {path: account.id, match: metadata.account_id}
          delivery_id: {path: id}
          batch: {path: events}
        """
    )
    env = {"API_URL": "http://localhost:9000", "NEW_SECRET": "n3w"}
    result = load(tmp_path, text, env)
    assert result.errors == () and result.warnings == ()
    provider = result.by_key["myapi"].provider
    assert provider.base_url == "http://localhost:9000"
    assert provider.webhook_secrets == ("n3w", "old-secret")
    assert provider.forward_webhooks is True
    assert provider.auth == AuthConfig(type="header", name="X-Api-Key")
    webhook = provider.webhook
    assert webhook.signature == SignatureConfig(
        scheme="hmac-sha256", header="X-Signature", encoding="base64", prefix="v1="
    )
    assert webhook.event_type == FieldRef(header="X-Event")
    assert webhook.connection == ConnectionRoute(path="account.id", match="metadata.account_id")
    assert webhook.delivery_id == FieldRef(path="id")
    assert webhook.batch == FieldRef(path="events")


def test_secrets_are_not_in_the_repr(tmp_path: Path) -> None:
    text = with_provider("webhook_secret: very-secret-value\n")
    provider = load(tmp_path, text).by_key["myapi"].provider
    assert provider.webhook_secrets == ("very-secret-value",)
    assert "very-secret-value" not in repr(provider)


def test_missing_env_var_names_variable_and_path(tmp_path: Path) -> None:
    result = load(tmp_path, with_provider("webhook_secret: ${HOOK_SECRET}\n"))
    problem = only(result.errors, "missing_env")
    assert problem.path == "providers.myapi.webhook_secret"
    assert "'HOOK_SECRET'" in problem.message


def test_env_default_and_empty_secret(tmp_path: Path) -> None:
    result = load(tmp_path, with_provider("base_url: ${URL:-http://localhost:1}\n"))
    assert result.by_key["myapi"].provider.base_url == "http://localhost:1"
    result = load(tmp_path, with_provider("webhook_secret: ${EMPTY}\n"), {"EMPTY": ""})
    assert only(result.errors, "invalid_value").path == "providers.myapi.webhook_secret"


def test_a_non_string_secret_is_not_echoed(tmp_path: Path) -> None:
    result = load(tmp_path, with_provider("webhook_secret: 987654321\n"))
    problem = only(result.errors, "invalid_type")
    assert problem.path == "providers.myapi.webhook_secret"
    assert "987654321" not in problem.message


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ("bearer", AuthConfig(type="bearer")),
        ("basic", AuthConfig(type="basic")),
        ("none", AuthConfig(type="none")),
        ("query:api_key", AuthConfig(type="query", name="api_key")),
        ("{type: header, name: X-Token}", AuthConfig(type="header", name="X-Token")),
    ],
)
def test_auth_forms(tmp_path: Path, auth: str, expected: AuthConfig) -> None:
    result = load(tmp_path, with_provider(f"auth: {auth}\n"))
    assert result.errors == ()
    assert result.by_key["myapi"].provider.auth == expected


@pytest.mark.parametrize(
    ("provider", "code", "path", "shown"),
    [
        ("auth: cookie", "invalid_value", "auth.type", "'cookie'"),
        ("auth: {type: header}", "missing_field", "auth.name", "'header'"),
        ("base_url: ftp://x", "invalid_value", "base_url", "'ftp://x'"),
        ("forward_webhooks: 'no'", "invalid_type", "forward_webhooks", "'no'"),
        ("preset: gihub", "unknown_preset", "preset", "'gihub'"),
        (
            "webhook: {signature: {scheme: md5}}",
            "invalid_value",
            "webhook.signature.scheme",
            "'md5'",
        ),
        (
            "webhook: {signature: {scheme: hmac-sha256, header: X, encoding: base32}}",
            "invalid_value",
            "webhook.signature.encoding",
            "'base32'",
        ),
        (
            "webhook: {signature: {scheme: stripe, tolerance_seconds: true}}",
            "invalid_type",
            "webhook.signature.tolerance_seconds",
            "True",
        ),
        (
            "webhook: {signature: hmac-sha256}",
            "missing_field",
            "webhook.signature.header",
            "header",
        ),
        (
            "webhook: {signature: {scheme: stripe, tolerance_seconds: 0}}",
            "invalid_value",
            "webhook.signature.tolerance_seconds",
            "from 1 to 86400, got 0",
        ),
        (
            "webhook: {signature: {scheme: slack, tolerance_seconds: 604800}}",
            "invalid_value",
            "webhook.signature.tolerance_seconds",
            "got 604800",
        ),
        (
            "webhook: {signature: {scheme: stripe, tolerance_seconds: '300'}}",
            "invalid_type",
            "webhook.signature.tolerance_seconds",
            "'300'",
        ),
        (
            # A misspelt key would silently leave the provider open to replays: an error.
            "webhook: {signature: {scheme: hmac-sha256, header: X, timestamp_heder: X-Ts}}",
            "unknown_key",
            "webhook.signature.timestamp_heder",
            "did you mean 'timestamp_header'?",
        ),
        (
            "webhook: {signature: {scheme: github, timestamp_header: X-Ts}}",
            "invalid_value",
            "webhook.signature.timestamp_header",
            "'github' does not read a signed timestamp from a header, so timestamp_header 'X-Ts'",
        ),
        (
            "webhook: {signature: {scheme: shopify, tolerance_seconds: 60}}",
            "invalid_value",
            "webhook.signature.tolerance_seconds",
            "'shopify' signs no timestamp, so tolerance_seconds 60 would never be checked",
        ),
        (
            "webhook: {signature: {scheme: hmac-sha256, header: X, tolerance_seconds: 60}}",
            "invalid_value",
            "webhook.signature.tolerance_seconds",
            "without timestamp_header signs no timestamp",
        ),
        (
            "webhook: {event_type: {header: X-E, path: type}}",
            "invalid_value",
            "webhook.event_type",
            "'X-E'",
        ),
        ("webhook: {batch: {header: X-B}}", "invalid_value", "webhook.batch", "'X-B'"),
        (
            "webhook: {connection: {path: a.id, match: account}}",
            "invalid_value",
            "webhook.connection.match",
            "'account'",
        ),
    ],
)
def test_bad_provider_values_name_path_and_value(
    tmp_path: Path, provider: str, code: str, path: str, shown: str
) -> None:
    result = load(tmp_path, with_provider(provider + "\nwebhook_secret: s\n"))
    problem = only(result.errors, code)
    assert problem.path == f"providers.myapi.{path}"
    assert shown in problem.message


def test_preset_is_merged_under_explicit_keys(tmp_path: Path) -> None:
    text = with_provider(
        """\
        preset: hubspot
        base_url: https://hubspot.internal.example
        webhook_secret: s
        webhook:
          signature: {tolerance_seconds: 60}
          connection: {match: connection_id}
        """
    )
    result = load(tmp_path, text)
    assert result.errors == ()
    provider = result.by_key["myapi"].provider
    assert provider.preset == "hubspot"
    assert provider.base_url == "https://hubspot.internal.example"
    signature = provider.webhook.signature
    assert (signature.scheme, signature.tolerance_seconds) == ("hubspot-v3", 60)
    assert provider.webhook.batch == FieldRef(path="$")
    assert provider.webhook.event_type == FieldRef(path="subscriptionType")
    assert provider.webhook.connection == ConnectionRoute(path="portalId", match="connection_id")


def test_an_empty_block_keeps_the_preset(tmp_path: Path) -> None:
    text = with_provider("preset: stripe\nwebhook_secret: s\nwebhook:\n")
    webhook = load(tmp_path, text).by_key["myapi"].provider.webhook
    assert webhook.signature.scheme == "stripe"
    assert webhook.connection == ConnectionRoute(path="account", match="metadata.account")


def test_generic_hmac_with_a_signed_timestamp(tmp_path: Path) -> None:
    text = with_provider(
        """\
        webhook_secret: s
        webhook:
          signature:
            scheme: hmac-sha256
            header: X-Signature
            timestamp_header: X-Timestamp
            tolerance_seconds: 120
        """
    )
    result = load(tmp_path, text)
    assert result.errors == ()
    assert result.by_key["myapi"].provider.webhook.signature == SignatureConfig(
        scheme="hmac-sha256",
        header="X-Signature",
        timestamp_header="X-Timestamp",
        tolerance_seconds=120,
    )


@pytest.mark.parametrize(
    "preset", ["github", "stripe", "slack", "shopify", "hubspot", "linear", "standard-webhooks"]
)
def test_every_preset_loads_without_problems(tmp_path: Path, preset: str) -> None:
    result = load(tmp_path, with_provider(f"preset: {preset}\nwebhook_secret: s\n"))
    assert result.errors == () and result.warnings == ()


def test_a_different_scheme_replaces_the_preset_signature(tmp_path: Path) -> None:
    text = with_provider(
        """\
        preset: github
        webhook_secret: s
        webhook:
          signature: {scheme: hmac-sha256, header: X-Sig}
          event_type: {path: action}
        """
    )
    webhook = load(tmp_path, text).by_key["myapi"].provider.webhook
    assert webhook.signature == SignatureConfig(scheme="hmac-sha256", header="X-Sig")
    assert webhook.event_type == FieldRef(path="action")
    assert webhook.delivery_id == FieldRef(header="X-GitHub-Delivery")


@pytest.mark.parametrize(
    "preset", ["github", "stripe", "slack", "shopify", "hubspot", "linear", "standard-webhooks"]
)
def test_every_preset_loads_cleanly(tmp_path: Path, preset: str) -> None:
    result = load(tmp_path, with_provider(f"preset: {preset}\nwebhook_secret: s\n"))
    assert result.errors == ()
    assert result.by_key["myapi"].provider.webhook.signature.scheme != "none"


def test_provider_warnings(tmp_path: Path) -> None:
    text = with_provider("preset: github\n") + "  other:\n    base_url: http://x\n"
    result = load(tmp_path, text)
    assert result.errors == ()
    assert only(result.warnings, "unknown_provider").path == "providers.other"
    assert only(result.warnings, "missing_secret").path == "providers.myapi.webhook_secret"


def test_subscriptions_without_event_type_or_signature_warn(tmp_path: Path) -> None:
    result = load(tmp_path, BASE)
    assert result.errors == ()
    assert only(result.warnings, "no_event_type").path == "providers.myapi.webhook.event_type"
    assert only(result.warnings, "unsigned_webhooks").path == "providers.myapi.webhook.signature"


# --- raising and describing -----------------------------------------------------------


def test_or_raise_joins_every_error(tmp_path: Path) -> None:
    text = BASE.replace("every 1h", "every 1 fortnight").replace("output: Contact", "output: Nope")
    write(
        tmp_path, text.replace("        output:", "        track_deletes: maybe\n        output:")
    )
    with pytest.raises(ConfigError) as caught:
        load_integrations_or_raise(tmp_path, {})
    lines = str(caught.value).splitlines()
    assert lines == [str(problem) for problem in load_integrations(tmp_path, {}).errors]
    # Every mistake is reported at once, even in a sync that cannot be scheduled.
    assert sorted(line.split(":")[0] for line in lines) == [
        "integrations.myapi.syncs.contacts.output",
        "integrations.myapi.syncs.contacts.runs",
        "integrations.myapi.syncs.contacts.track_deletes",
    ]
    assert "invalid frequency 'every 1 fortnight'" in str(caught.value)


def test_or_raise_returns_a_clean_file(tmp_path: Path) -> None:
    write(tmp_path, BASE)
    assert load_integrations_or_raise(tmp_path, {}).get_sync("myapi", "contacts") is not None


def test_describe_is_the_check_json_shape(tmp_path: Path) -> None:
    result = load(tmp_path, BASE.replace("contact.updated", "'*'"), scripts=())
    data = json.loads(json.dumps(describe(result)))
    assert data["integrations"] == {
        "myapi": {
            "syncs": {
                "contacts": {
                    "runs": "every 1h",
                    "interval_seconds": 3600,
                    "sync_type": "full",
                    "track_deletes": False,
                    "auto_start": True,
                    "webhook_subscriptions": ["*"],
                    "output": ["Contact"],
                }
            }
        }
    }
    assert data["errors"] == [
        {
            "code": "script_missing",
            "message": only(result.errors, "script_missing").message,
            "path": "integrations.myapi.syncs.contacts",
        }
    ]
    assert {"code", "message", "path"} == set(data["warnings"][0])


# --- time_limit: hooksync's per-sync soft limit ---------------------------------------


@pytest.mark.parametrize(("written", "seconds"), [("90", 90), ("'90s'", 90), ("10m", 600)])
def test_a_sync_time_limit_is_read_in_seconds(tmp_path: Path, written: str, seconds: int) -> None:
    text = BASE.replace("runs: every 1h", f"runs: every 1h\n        time_limit: {written}")
    sync = load(tmp_path, text).by_key["myapi"].syncs["contacts"]
    assert sync.time_limit_seconds == seconds
    assert sync.soft_limit_seconds(1800, 2100) == seconds
    assert sync.soft_limit_seconds(1800, 60) == 54  # never at or past the worker's hard limit


def test_without_a_time_limit_a_sync_takes_the_default(tmp_path: Path) -> None:
    sync = load(tmp_path, BASE).by_key["myapi"].syncs["contacts"]
    assert sync.time_limit_seconds is None and sync.soft_limit_seconds(1800, 2100) == 1800


@pytest.mark.parametrize("written", ["0", "-5", "soon", "10 parsecs", "true", "[1]"])
def test_a_bad_time_limit_is_an_error_naming_the_key_and_value(
    tmp_path: Path, written: str
) -> None:
    text = BASE.replace("runs: every 1h", f"runs: every 1h\n        time_limit: {written}")
    problem = only(load(tmp_path, text).errors, "invalid_duration")
    assert problem.path.endswith("contacts.time_limit")
    assert "invalid duration" in problem.message


# --- oauth_client: the integration's OAuth client for token refresh -------------------


def test_a_providers_oauth_client_is_read_with_its_variables(tmp_path: Path) -> None:
    text = with_provider(
        """
        oauth_client:
          token_url: https://auth.example.com/token
          client_id: cid
          client_secret: ${MYAPI_CLIENT_SECRET}
        """
    )
    provider = load(tmp_path, text, {"MYAPI_CLIENT_SECRET": "s3"}).by_key["myapi"].provider
    assert provider.oauth_client == {
        "token_url": "https://auth.example.com/token",
        "client_id": "cid",
        "client_secret": "s3",
    }
    assert "s3" not in repr(provider)


def test_a_bad_oauth_client_names_the_key_and_never_echoes_a_secret(tmp_path: Path) -> None:
    text = with_provider(
        """
        oauth_client:
          token_url: ftp://auth.example.com/token
          client_id: cid
          client_secret: 12345678
          scope: read
        """
    )
    result = load(tmp_path, text)
    url = only(result.errors, "invalid_value")
    assert url.path == "providers.myapi.oauth_client.token_url" and "ftp://" in url.message
    secret = only(result.errors, "invalid_type")
    assert secret.path == "providers.myapi.oauth_client.client_secret"
    assert "12345678" not in secret.message
    assert only(result.warnings, "unknown_key").path.endswith("oauth_client.scope")
    assert result.by_key["myapi"].provider.oauth_client == {"client_id": "cid"}
