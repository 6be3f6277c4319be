"""Load and validate ``nango.yaml`` (v2) plus hooksync's ``providers`` extension.

``load_integrations`` never raises for what the file says: every problem becomes a
``Problem(code, message, path)`` in ``errors`` or ``warnings`` and whatever is valid is
still returned, so ``hooksync check`` can list every mistake at once. Processes that must
not start on a broken file call ``load_integrations_or_raise``.

``${VAR}`` (or ``${VAR:-default}``) in ``base_url`` and ``webhook_secret`` is read from the
``environ`` passed in; values that hold secrets are never echoed in a problem message.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from config.errors import BadInputError, ConfigError
from config.frequency import parse_frequency
from config.integrations import (
    AuthConfig,
    ConnectionRoute,
    FieldRef,
    IntegrationConfig,
    Integrations,
    ModelConfig,
    Problem,
    ProviderConfig,
    SignatureConfig,
    SyncConfig,
    WebhookConfig,
)
from config.presets import BATCH_ROOT, PRESETS, SIGNATURE_SCHEMES

__all__ = ["FILENAME", "describe", "load_integrations", "load_integrations_or_raise"]

#: The integrations file inside the integrations directory.
FILENAME = "nango.yaml"

_TOP_KEYS = frozenset({"integrations", "models", "providers"})
_SYNC_KEYS = frozenset(
    {
        "runs",
        "webhook-subscriptions",
        "output",
        "sync_type",
        "track_deletes",
        "auto_start",
        "endpoint",
        "endpoints",
        "description",
        "version",
        "scopes",
        "input",
    }
)
#: Integration sections hooksync reads but does not run.
_IGNORED_SECTIONS = ("actions", "on-events", "post-connection-scripts")
_PROVIDER_KEYS = frozenset(
    {"preset", "base_url", "webhook_secret", "forward_webhooks", "auth", "webhook"}
)
_WEBHOOK_KEYS = frozenset({"signature", "event_type", "connection", "delivery_id", "batch"})
_SIGNATURE_KEYS = frozenset(
    {"scheme", "header", "encoding", "prefix", "timestamp_header", "tolerance_seconds"}
)
_HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
#: Names become file paths (``<integration>/syncs/<sync>.py``) and URL segments.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_AuthType = Literal["bearer", "basic", "header", "query", "none"]
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _Report:
    """Collects problems while the loader walks the file."""

    def __init__(self) -> None:
        self.errors: list[Problem] = []
        self.warnings: list[Problem] = []

    def error(self, code: str, path: str, message: str) -> None:
        self.errors.append(Problem(code, message, path))

    def warn(self, code: str, path: str, message: str) -> None:
        self.warnings.append(Problem(code, message, path))

    def expect(
        self, value: object, kinds: type | tuple[type, ...], path: str, expected: str
    ) -> bool:
        """True when ``value`` has one of ``kinds``; otherwise record an ``invalid_type``."""
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        # bool is an int subclass: `tolerance_seconds: true` must not pass as 1.
        if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds):
            return True
        self.error("invalid_type", path, f"expected {expected}, got {value!r}")
        return False

    def unknown_keys(self, raw: Mapping[Any, Any], known: frozenset[str], path: str) -> None:
        for key in raw:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                self.warn(
                    "unknown_key",
                    f"{path}.{key}" if path else str(key),
                    f"unknown key {key!r} is ignored; {hint}known keys: {', '.join(sorted(known))}",
                )


def load_integrations(directory: Path, environ: Mapping[str, str]) -> Integrations:
    """Read ``<directory>/nango.yaml`` and return everything valid in it, with its problems.

    Args:
        directory: The integrations folder (holds ``nango.yaml`` and the sync scripts).
        environ: Where ``${VAR}`` references in ``providers`` are looked up.

    Returns:
        The parsed integrations and models, plus ``errors`` and ``warnings``. A missing
        file (``file_missing``) or invalid YAML (``yaml_syntax``) is an error, not an
        exception.
    """
    report = _Report()
    data = _read_file(Path(directory) / FILENAME, report)
    if data is None:
        return _finish(report)
    report.unknown_keys(data, _TOP_KEYS, "")
    models = _parse_models(data.get("models"), report)
    syncs_by_key = _parse_integrations(data.get("integrations"), models, Path(directory), report)
    providers = _parse_providers(data.get("providers"), syncs_by_key, environ, report)
    integrations: dict[str, IntegrationConfig] = {}
    for key, syncs in syncs_by_key.items():
        provider = providers.get(key, ProviderConfig(key=key))
        _check_webhook_routing(key, syncs, provider, report)
        integrations[key] = IntegrationConfig(key=key, syncs=syncs, provider=provider)
    return _finish(report, integrations, models)


def load_integrations_or_raise(directory: Path, environ: Mapping[str, str]) -> Integrations:
    """Like ``load_integrations`` but raise when the file has any error.

    Raises:
        ConfigError: With every error, one ``path: message`` per line.
    """
    result = load_integrations(directory, environ)
    if result.errors:
        raise ConfigError("\n".join(str(problem) for problem in result.errors))
    return result


def describe(integrations: Integrations) -> dict[str, Any]:
    """Return the machine-readable view printed by ``hooksync check --json`` (DESIGN §3).

    Secrets are not part of it.
    """
    return {
        "integrations": {
            key: {
                "syncs": {
                    name: {
                        "runs": sync.runs,
                        "interval_seconds": sync.interval_seconds,
                        "sync_type": sync.sync_type,
                        "track_deletes": sync.track_deletes,
                        "auto_start": sync.auto_start,
                        "webhook_subscriptions": list(sync.webhook_subscriptions),
                        "output": list(sync.output),
                    }
                    for name, sync in config.syncs.items()
                }
            }
            for key, config in integrations.integrations.items()
        },
        "errors": [asdict(problem) for problem in integrations.errors],
        "warnings": [asdict(problem) for problem in integrations.warnings],
    }


def _finish(
    report: _Report,
    integrations: dict[str, IntegrationConfig] | None = None,
    models: dict[str, ModelConfig] | None = None,
) -> Integrations:
    return Integrations(
        integrations=integrations or {},
        models=models or {},
        errors=tuple(report.errors),
        warnings=tuple(report.warnings),
    )


# --- the file -------------------------------------------------------------------------


def _read_file(path: Path, report: _Report) -> dict[Any, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        report.error(
            "file_missing",
            FILENAME,
            f"{str(path)!r} not found; create it or point "
            "HOOKSYNC_INTEGRATIONS_DIR at the folder that holds it",
        )
        return None
    except (OSError, UnicodeDecodeError) as error:
        report.error("file_unreadable", FILENAME, f"cannot read {str(path)!r}: {error}")
        return None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        report.error("yaml_syntax", FILENAME, _describe_yaml_error(error))
        return None
    if data is None:
        report.warn("empty_file", FILENAME, "the file is empty; no integrations are declared")
        return {}
    if not report.expect(data, dict, FILENAME, "a mapping with 'integrations' and 'models'"):
        return None
    return cast(dict[Any, Any], data)


def _describe_yaml_error(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    if mark is None:
        return f"invalid YAML: {problem}"
    return f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: {problem}"


# --- models ---------------------------------------------------------------------------


def _parse_models(raw: object, report: _Report) -> dict[str, ModelConfig]:
    """Parse ``models``: strip ``?`` into ``optional`` and merge ``__extends`` parents."""
    if raw is None:
        return {}
    if not report.expect(raw, dict, "models", "a mapping of model name to fields"):
        return {}
    declared: dict[str, tuple[dict[str, object], set[str], tuple[str, ...]]] = {}
    for name, body in cast(dict[Any, Any], raw).items():
        path = f"models.{name}"
        if not report.expect(name, str, path, "a model name (string)"):
            continue
        body = {} if body is None else body
        if report.expect(body, dict, path, "a mapping of field name to type"):
            declared[name] = _parse_model_body(body, path, report)
    resolved: dict[str, ModelConfig] = {}
    for name in declared:
        _resolve_model(name, declared, resolved, frozenset(), report)
    return resolved


def _parse_model_body(
    body: dict[Any, Any], path: str, report: _Report
) -> tuple[dict[str, object], set[str], tuple[str, ...]]:
    fields: dict[str, object] = {}
    optional: set[str] = set()
    extends: tuple[str, ...] = ()
    for field_name, field_type in body.items():
        field_path = f"{path}.{field_name}"
        if not report.expect(field_name, str, field_path, "a field name (string)"):
            continue
        if field_name == "__extends":
            if report.expect(field_type, str, field_path, "a comma-separated list of models"):
                extends = tuple(n.strip() for n in field_type.split(",") if n.strip())
            continue
        if isinstance(field_type, list):
            report.error(
                "invalid_type",
                field_path,
                f"expected a type such as 'string[]', got {field_type!r}",
            )
            continue
        if field_name.endswith("?"):
            field_name = field_name[:-1]
            optional.add(field_name)
        fields[field_name] = field_type
    return fields, optional, extends


def _resolve_model(
    name: str,
    declared: Mapping[str, tuple[dict[str, object], set[str], tuple[str, ...]]],
    resolved: dict[str, ModelConfig],
    stack: frozenset[str],
    report: _Report,
) -> ModelConfig:
    if name in resolved:
        return resolved[name]
    own_fields, own_optional, extends = declared[name]
    fields: dict[str, object] = {}
    optional: set[str] = set()
    path = f"models.{name}.__extends"
    # Parents first, in the order written, so the model's own fields override theirs.
    for parent in extends:
        if parent not in declared:
            report.error("unknown_model", path, f"extends {parent!r}, which is not declared")
        elif parent == name or parent in stack:
            report.error("extends_cycle", path, f"extending {parent!r} makes a cycle")
        else:
            base = _resolve_model(parent, declared, resolved, stack | {name}, report)
            fields.update(base.fields)
            optional = (optional - base.fields.keys()) | base.optional
    fields.update(own_fields)
    optional = (optional - own_fields.keys()) | own_optional
    model = ModelConfig(name=name, fields=fields, optional=frozenset(optional))
    resolved[name] = model
    return model


# --- integrations and syncs -----------------------------------------------------------


def _parse_integrations(
    raw: object, models: Mapping[str, ModelConfig], directory: Path, report: _Report
) -> dict[str, dict[str, SyncConfig]]:
    if raw is None:
        report.warn("no_integrations", "integrations", "no integrations are declared")
        return {}
    if not report.expect(raw, dict, "integrations", "a mapping of integration key to syncs"):
        return {}
    result: dict[str, dict[str, SyncConfig]] = {}
    for key, body in cast(dict[Any, Any], raw).items():
        path = f"integrations.{key}"
        if not _check_name(key, path, "integration key", report):
            continue
        body = {} if body is None else body
        if not report.expect(body, dict, path, "a mapping with 'syncs'"):
            continue
        _note_other_sections(body, path, report)
        result[key] = _parse_syncs(key, body.get("syncs"), models, directory, report)
    return result


def _note_other_sections(body: dict[Any, Any], path: str, report: _Report) -> None:
    for section in _IGNORED_SECTIONS:
        if section in body:
            report.warn(
                "ignored_section",
                f"{path}.{section}",
                f"{section!r} is parsed but not run by "
                "hooksync (only syncs are); remove it to silence this warning",
            )
    for key, value in body.items():
        if key == "syncs" or key in _IGNORED_SECTIONS:
            continue
        hint = ""
        if isinstance(value, dict) and "runs" in value:
            hint = "; this looks like a nango.yaml v1 sync: move it under 'syncs:'"
        report.warn("unknown_key", f"{path}.{key}", f"unknown key {key!r} is ignored{hint}")


def _parse_syncs(
    key: str,
    raw: object,
    models: Mapping[str, ModelConfig],
    directory: Path,
    report: _Report,
) -> dict[str, SyncConfig]:
    path = f"integrations.{key}.syncs"
    if raw is None:
        return {}
    if not report.expect(raw, dict, path, "a mapping of sync name to settings"):
        return {}
    syncs: dict[str, SyncConfig] = {}
    for name, body in cast(dict[Any, Any], raw).items():
        sync_path = f"{path}.{name}"
        if not _check_name(name, sync_path, "sync name", report):
            continue
        sync = _parse_sync(key, name, {} if body is None else body, sync_path, models, report)
        if sync is None:
            continue
        syncs[name] = sync
        script = directory / key / "syncs" / f"{name}.py"
        if not script.is_file():
            report.error(
                "script_missing",
                sync_path,
                f"script {f'{key}/syncs/{name}.py'!r} not found "
                f"in {str(directory)!r}; create it with a fetch_data(nango) function",
            )
    return syncs


def _parse_sync(
    key: str,
    name: str,
    raw: object,
    path: str,
    models: Mapping[str, ModelConfig],
    report: _Report,
) -> SyncConfig | None:
    """Build one sync; None only when ``runs`` is unusable (nothing could schedule it)."""
    if not report.expect(raw, dict, path, "a mapping of sync settings"):
        return None
    body = cast(dict[Any, Any], raw)
    report.unknown_keys(body, _SYNC_KEYS, path)
    interval = _interval(body, path, report)
    output = _string_list(body.get("output"), f"{path}.output", report)
    for model in output:
        if model not in models:
            report.error(
                "unknown_model",
                f"{path}.output",
                f"output model {model!r} is not declared under 'models'; declare it or fix "
                "the name",
            )
    if "output" not in body:
        report.warn("missing_output", path, "sync has no 'output' model; nothing can be saved")
    sync = SyncConfig(
        name=name,
        integration=key,
        runs=str(body.get("runs")),
        interval_seconds=interval or 0,
        webhook_subscriptions=_string_list(
            body.get("webhook-subscriptions"), f"{path}.webhook-subscriptions", report
        ),
        output=output,
        sync_type=_sync_type(body.get("sync_type"), f"{path}.sync_type", report),
        track_deletes=_bool(body, "track_deletes", False, path, report),
        auto_start=_bool(body, "auto_start", True, path, report),
        description=_description(body.get("description"), f"{path}.description", report),
        version=_version(body.get("version"), f"{path}.version", report),
        scopes=_string_list(body.get("scopes"), f"{path}.scopes", report, split_commas=True),
        endpoints=_endpoints(body, path, report),
        input=_optional_str(body.get("input"), f"{path}.input", report),
    )
    # Every field is checked first so one run of `hooksync check` lists every mistake.
    return None if interval is None else sync


def _interval(body: Mapping[Any, Any], path: str, report: _Report) -> int | None:
    if "runs" not in body:
        report.error("missing_field", f"{path}.runs", "every sync needs 'runs', e.g. 'every 1h'")
        return None
    try:
        return parse_frequency(body["runs"])
    except BadInputError as error:
        report.error(error.code, f"{path}.runs", str(error))
        return None


def _check_name(name: object, path: str, what: str, report: _Report) -> bool:
    if not report.expect(name, str, path, f"a {what} (string)"):
        return False
    if not _SAFE_NAME.fullmatch(cast(str, name)):
        report.error(
            "invalid_name",
            path,
            f"{what} {name!r} may only use letters, digits, '_', '-' "
            "and '.' (it becomes a file name and a URL segment)",
        )
        return False
    return True


def _string_list(
    raw: object, path: str, report: _Report, *, split_commas: bool = False
) -> tuple[str, ...]:
    """A string or a list of strings, as Nango allows for outputs, scopes and subscriptions."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        parts = raw.split(",") if split_commas else [raw]
        return tuple(p.strip() for p in parts if p.strip())
    if not report.expect(raw, list, path, "a string or a list of strings"):
        return ()
    items: list[str] = []
    for index, item in enumerate(cast(list[Any], raw)):
        if report.expect(item, str, f"{path}[{index}]", "a string"):
            items.append(item.strip())
    return tuple(items)


def _sync_type(raw: object, path: str, report: _Report) -> Literal["incremental", "full"]:
    if raw is None:
        return "incremental"
    if isinstance(raw, str) and raw.strip().lower() in ("incremental", "full"):
        return cast(Literal["incremental", "full"], raw.strip().lower())
    report.error("invalid_value", path, f"expected 'incremental' or 'full', got {raw!r}")
    return "incremental"


def _bool(body: Mapping[Any, Any], key: str, default: bool, path: str, report: _Report) -> bool:
    raw = body.get(key)
    if raw is None:
        return default
    if report.expect(raw, bool, f"{path}.{key}", "true or false"):
        return cast(bool, raw)
    return default


def _description(raw: object, path: str, report: _Report) -> str:
    if raw is None:
        return ""
    return cast(str, raw).strip() if report.expect(raw, str, path, "a string") else ""


def _version(raw: object, path: str, report: _Report) -> str | None:
    if raw is None:
        return None
    # `version: 1.0` reads as a float; keep it as the text the author meant.
    if report.expect(raw, (str, int, float), path, "a version string such as '1.0.0'"):
        return str(raw)
    return None


def _optional_str(raw: object, path: str, report: _Report) -> str | None:
    if raw is None:
        return None
    return cast(str, raw) if report.expect(raw, str, path, "a string") else None


def _endpoints(body: Mapping[Any, Any], path: str, report: _Report) -> tuple[dict[str, str], ...]:
    """``endpoint``/``endpoints``: "GET /x", "/x" (GET), {method, path, group}, or a list."""
    result: list[dict[str, str]] = []
    for key in ("endpoint", "endpoints"):
        raw = body.get(key)
        if raw is None:
            continue
        items = raw if isinstance(raw, list) else [raw]
        for index, item in enumerate(items):
            item_path = f"{path}.{key}[{index}]" if isinstance(raw, list) else f"{path}.{key}"
            endpoint = _endpoint(item, item_path, report)
            if endpoint is not None:
                result.append(endpoint)
    return tuple(result)


def _endpoint(item: object, path: str, report: _Report) -> dict[str, str] | None:
    group: object = None
    method: object
    route: object
    if isinstance(item, str) and len(item.split()) in (1, 2):
        parts = item.split()
        method, route = ("GET", parts[0]) if len(parts) == 1 else (parts[0], parts[1])
    elif isinstance(item, dict):
        report.unknown_keys(item, frozenset({"method", "path", "group"}), path)
        method, route, group = item.get("method", "GET"), item.get("path"), item.get("group")
    else:
        report.error("invalid_endpoint", path, f"expected 'METHOD /path', got {item!r}")
        return None
    if not isinstance(method, str) or method.upper() not in _HTTP_METHODS:
        methods = ", ".join(sorted(_HTTP_METHODS))
        report.error("invalid_endpoint", path, f"unknown method {method!r}; use one of {methods}")
        return None
    if not isinstance(route, str) or not route.startswith("/"):
        report.error("invalid_endpoint", path, f"endpoint path must start with '/', got {route!r}")
        return None
    endpoint = {"method": method.upper(), "path": route}
    if group is not None:
        endpoint["group"] = str(group)
    return endpoint


# --- providers ------------------------------------------------------------------------


def _parse_providers(
    raw: object,
    integrations: Mapping[str, object],
    environ: Mapping[str, str],
    report: _Report,
) -> dict[str, ProviderConfig]:
    if raw is None:
        return {}
    if not report.expect(raw, dict, "providers", "a mapping of integration key to settings"):
        return {}
    result: dict[str, ProviderConfig] = {}
    for key, body in cast(dict[Any, Any], raw).items():
        path = f"providers.{key}"
        if not report.expect(key, str, path, "an integration key (string)"):
            continue
        if key not in integrations:
            report.warn(
                "unknown_provider",
                path,
                f"no integration {key!r} is declared under "
                "'integrations'; this provider entry is unused",
            )
        body = {} if body is None else body
        if report.expect(body, dict, path, "a mapping of provider settings"):
            result[key] = _parse_provider(key, body, path, environ, report)
    return result


def _parse_provider(
    key: str, body: dict[Any, Any], path: str, environ: Mapping[str, str], report: _Report
) -> ProviderConfig:
    report.unknown_keys(body, _PROVIDER_KEYS, path)
    preset = _optional_str(body.get("preset"), f"{path}.preset", report)
    if preset is not None:
        if preset in PRESETS:
            body = _merge_preset(PRESETS[preset], body)
        else:
            close = difflib.get_close_matches(preset, PRESETS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            report.error(
                "unknown_preset",
                f"{path}.preset",
                f"unknown preset {preset!r}; {hint}known presets: {', '.join(sorted(PRESETS))}",
            )
            preset = None
    secrets = _webhook_secrets(
        body.get("webhook_secret"), f"{path}.webhook_secret", environ, report
    )
    webhook = _webhook(body.get("webhook"), f"{path}.webhook", report)
    if webhook.signature.scheme != "none" and not secrets:
        report.warn(
            "missing_secret",
            f"{path}.webhook_secret",
            f"signature scheme "
            f"{webhook.signature.scheme!r} has no webhook_secret, so every webhook for "
            f"{key!r} will be rejected; set webhook_secret (e.g. ${{MY_SECRET}})",
        )
    return ProviderConfig(
        key=key,
        preset=preset,
        base_url=_base_url(body.get("base_url"), f"{path}.base_url", environ, report),
        auth=_auth(body.get("auth"), f"{path}.auth", report),
        webhook_secrets=secrets,
        forward_webhooks=_bool(body, "forward_webhooks", False, path, report),
        webhook=webhook,
    )


def _merge_preset(preset: Mapping[str, Any], explicit: Mapping[Any, Any]) -> dict[Any, Any]:
    """Deep-merge ``explicit`` over ``preset``, key by key.

    Blocks whose keys only make sense together are replaced whole when written: ``auth``,
    ``event_type``, ``delivery_id``, ``batch``, and a ``signature`` naming another scheme
    (a GitHub ``prefix`` must not leak into a custom scheme).
    """
    merged = copy.deepcopy(dict(preset))
    for key, value in explicit.items():
        # `webhook:` left empty in YAML is None: it keeps the preset rather than erasing it.
        if key == "preset" or value is None:
            continue
        base = merged.get(key)
        if key == "webhook" and isinstance(base, dict) and isinstance(value, dict):
            merged[key] = _merge_webhook(base, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _merge_webhook(base: dict[str, Any], explicit: Mapping[Any, Any]) -> dict[Any, Any]:
    merged: dict[Any, Any] = dict(base)
    for key, value in explicit.items():
        if value is None:
            continue
        old = merged.get(key)
        mergeable = key in ("signature", "connection") and isinstance(old, dict)
        if key == "signature" and isinstance(value, dict) and isinstance(old, dict):
            mergeable = value.get("scheme", old.get("scheme")) == old.get("scheme")
        if mergeable and isinstance(value, dict) and isinstance(old, dict):
            merged[key] = {**old, **value}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _substitute(value: str, path: str, environ: Mapping[str, str], report: _Report) -> str | None:
    """Replace ``${VAR}`` / ``${VAR:-default}``; None (and an error) when a VAR is unset."""
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = environ.get(name)
        if found:
            return found
        if default is not None:
            return default
        if found is not None:
            return found
        missing.append(name)
        return ""

    result = _ENV_REF.sub(replace, value)
    for name in missing:
        report.error(
            "missing_env",
            path,
            f"environment variable {name!r} is not set; export it or "
            f"give a default with ${{{name}:-...}}",
        )
    return None if missing else result


def _webhook_secrets(
    raw: object, path: str, environ: Mapping[str, str], report: _Report
) -> tuple[str, ...]:
    if raw is None:
        return ()
    items = raw if isinstance(raw, list) else [raw]
    secrets: list[str] = []
    for index, item in enumerate(items):
        item_path = f"{path}[{index}]" if isinstance(raw, list) else path
        if not isinstance(item, str):
            # Never echo a secret: name its type only.
            report.error(
                "invalid_type",
                item_path,
                f"expected a string (or a list of strings), got a "
                f"{type(item).__name__}; quote the secret or use ${{VAR}}",
            )
            continue
        value = _substitute(item, item_path, environ, report)
        if value is None:
            continue
        if not value:
            report.error(
                "invalid_value",
                item_path,
                "webhook secret is empty; anyone could sign with an empty key",
            )
            continue
        secrets.append(value)
    return tuple(secrets)


def _base_url(raw: object, path: str, environ: Mapping[str, str], report: _Report) -> str | None:
    if raw is None or not report.expect(raw, str, path, "an http:// or https:// URL"):
        return None
    url = _substitute(cast(str, raw), path, environ, report)
    if url is None:
        return None
    if not url.startswith(("http://", "https://")):
        report.error("invalid_value", path, f"expected an http:// or https:// URL, got {url!r}")
        return None
    return url


def _auth(raw: object, path: str, report: _Report) -> AuthConfig:
    if raw is None:
        return AuthConfig()
    if isinstance(raw, str):
        head, _, tail = raw.partition(":")
        raw = {"type": head.strip(), "name": tail.strip() or None} if tail else {"type": raw}
    if not report.expect(
        raw, dict, path, "bearer, basic, none, 'header:<Name>' or 'query:<param>'"
    ):
        return AuthConfig()
    body = cast(dict[Any, Any], raw)
    report.unknown_keys(body, frozenset({"type", "name"}), path)
    kind, name = body.get("type"), body.get("name")
    if kind in ("bearer", "basic", "none"):
        return AuthConfig(type=cast(_AuthType, kind))
    if kind in ("header", "query"):
        if isinstance(name, str) and name:
            return AuthConfig(type=cast(_AuthType, kind), name=name)
        report.error(
            "missing_field",
            f"{path}.name",
            f"auth type {kind!r} needs a name, e.g. "
            f"'{kind}:{'X-Api-Key' if kind == 'header' else 'api_key'}'",
        )
        return AuthConfig()
    report.error(
        "invalid_value",
        f"{path}.type",
        f"expected bearer, basic, none, header or query, got {kind!r}",
    )
    return AuthConfig()


def _webhook(raw: object, path: str, report: _Report) -> WebhookConfig:
    if raw is None or not report.expect(raw, dict, path, "a mapping of webhook settings"):
        return WebhookConfig()
    body = cast(dict[Any, Any], raw)
    report.unknown_keys(body, _WEBHOOK_KEYS, path)
    return WebhookConfig(
        signature=_signature(body.get("signature"), f"{path}.signature", report),
        event_type=_field_ref(body.get("event_type"), f"{path}.event_type", report),
        connection=_connection(body.get("connection"), f"{path}.connection", report),
        delivery_id=_field_ref(body.get("delivery_id"), f"{path}.delivery_id", report),
        batch=_field_ref(body.get("batch"), f"{path}.batch", report, header_allowed=False),
    )


def _signature(raw: object, path: str, report: _Report) -> SignatureConfig:
    default = SignatureConfig(scheme="none")
    if raw is None:
        return default
    if isinstance(raw, str):
        raw = {"scheme": raw}
    if not report.expect(raw, dict, path, "a mapping with 'scheme' (or a scheme name)"):
        return default
    body = cast(dict[Any, Any], raw)
    report.unknown_keys(body, _SIGNATURE_KEYS, path)
    scheme = body.get("scheme")
    if scheme not in SIGNATURE_SCHEMES:
        report.error(
            "invalid_value",
            f"{path}.scheme",
            f"unknown signature scheme {scheme!r}; use one of {', '.join(SIGNATURE_SCHEMES)}",
        )
        return default
    strings = {
        k: _optional_str(body.get(k), f"{path}.{k}", report)
        for k in ("header", "prefix", "timestamp_header")
    }
    encoding = body.get("encoding", "hex")
    if encoding not in ("hex", "base64"):
        report.error(
            "invalid_value", f"{path}.encoding", f"expected 'hex' or 'base64', got {encoding!r}"
        )
        encoding = "hex"
    tolerance = body.get("tolerance_seconds", 300)
    if not report.expect(tolerance, int, f"{path}.tolerance_seconds", "a whole number of seconds"):
        tolerance = 300
    elif tolerance <= 0:
        report.error(
            "invalid_value",
            f"{path}.tolerance_seconds",
            f"expected a positive number of seconds, got {tolerance!r}",
        )
        tolerance = 300
    if scheme == "hmac-sha256" and not strings["header"]:
        report.error(
            "missing_field",
            f"{path}.header",
            "scheme 'hmac-sha256' needs 'header', the request header that carries the signature",
        )
    return SignatureConfig(
        scheme=scheme,
        header=strings["header"],
        encoding=encoding,
        prefix=strings["prefix"] or "",
        timestamp_header=strings["timestamp_header"],
        tolerance_seconds=tolerance,
    )


def _field_ref(
    raw: object, path: str, report: _Report, *, header_allowed: bool = True
) -> FieldRef | None:
    allowed = ("header", "path") if header_allowed else ("path",)
    shape = " or ".join(f"{{{key}: ...}}" for key in allowed)
    if raw is None or not report.expect(raw, dict, path, shape):
        return None
    body = cast(dict[Any, Any], raw)
    report.unknown_keys(body, frozenset(allowed), path)
    given = {k: body[k] for k in allowed if body.get(k) is not None}
    if len(given) != 1:
        report.error("invalid_value", path, f"expected exactly one of {shape}, got {raw!r}")
        return None
    ((kind, value),) = given.items()
    if not report.expect(value, str, f"{path}.{kind}", "a string") or not value:
        return None
    if kind == "path" and value != BATCH_ROOT and not _is_dotted_path(value):
        report.error(
            "invalid_value",
            f"{path}.path",
            f"expected a dotted path such as 'event.type', got {value!r}",
        )
        return None
    return FieldRef(header=value) if kind == "header" else FieldRef(path=value)


def _connection(raw: object, path: str, report: _Report) -> ConnectionRoute | None:
    if raw is None or not report.expect(raw, dict, path, "{path: ..., match: ...}"):
        return None
    body = cast(dict[Any, Any], raw)
    report.unknown_keys(body, frozenset({"path", "match"}), path)
    route, match = body.get("path"), body.get("match", "connection_id")
    if route is None:
        report.error(
            "missing_field",
            f"{path}.path",
            "connection routing needs 'path', the body value that identifies the connection",
        )
        return None
    if not report.expect(route, str, f"{path}.path", "a dotted path") or not report.expect(
        match, str, f"{path}.match", "'connection_id' or 'metadata.<key>'"
    ):
        return None
    if not _is_dotted_path(route):
        report.error("invalid_value", f"{path}.path", f"expected a dotted path, got {route!r}")
        return None
    if match != "connection_id" and not (
        match.startswith("metadata.") and _is_dotted_path(match[len("metadata.") :])
    ):
        report.error(
            "invalid_value",
            f"{path}.match",
            f"expected 'connection_id' or 'metadata.<key>', got {match!r}",
        )
        return None
    return ConnectionRoute(path=route, match=match)


def _is_dotted_path(value: str) -> bool:
    return all(part.strip() for part in value.split("."))


def _check_webhook_routing(
    key: str, syncs: Mapping[str, SyncConfig], provider: ProviderConfig, report: _Report
) -> None:
    """Warn when syncs subscribe to webhooks that the provider settings cannot deliver."""
    subscribed = [s for s in syncs.values() if s.webhook_subscriptions]
    if not subscribed:
        return
    path = f"providers.{key}.webhook"
    names = ", ".join(repr(s.name) for s in subscribed)
    specific = [s for s in subscribed if set(s.webhook_subscriptions) != {"*"}]
    if specific and provider.webhook.event_type is None:
        report.warn(
            "no_event_type",
            f"{path}.event_type",
            f"syncs {names} subscribe to event types "
            "but no webhook.event_type says where the type is; only '*' will match",
        )
    if provider.webhook.signature.scheme == "none":
        report.warn(
            "unsigned_webhooks",
            f"{path}.signature",
            f"syncs {names} take webhooks for {key!r} "
            "but no signature is checked; anyone who knows the URL can post events",
        )
