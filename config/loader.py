"""Load and validate ``nango.yaml`` (v2) plus hooksync's ``providers`` extension.

``load_integrations`` never raises for what the file says: every problem becomes a
``Problem(code, message, path)`` in ``errors`` or ``warnings`` and whatever is valid is
still returned, so ``hooksync check`` can list every mistake at once. Processes that must
not start on a broken file call ``load_integrations_or_raise``.

The ``providers`` section (presets, ``${VAR}`` substitution, webhook settings) is parsed
by ``config/providers.py`` into the same report.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, cast

import yaml

from config.errors import BadInputError, ConfigError
from config.frequency import parse_duration, parse_frequency
from config.integrations import (
    IntegrationConfig,
    Integrations,
    ModelConfig,
    Problem,
    ProviderConfig,
    SyncConfig,
    SyncType,
)
from config.providers import parse_providers
from config.values import read_bool, read_optional_str
from config.yaml_compat import load_like_js_yaml

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
        # hooksync's own: the sync's soft time limit per run (Nango has no such key).
        "time_limit",
    }
)
#: Integration sections hooksync reads but does not run.
_IGNORED_SECTIONS = ("actions", "on-events", "post-connection-scripts")
_HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
#: Names become file paths (``<integration>/syncs/<sync>.py``) and URL segments.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
#: Written in an integration key, Nango's tooling reads it as the name of the folder that
#: holds nango.yaml (``integrations: ${PWD}:`` in ``hubspot/nango.yaml`` is ``hubspot``).
_FOLDER_KEY = "${PWD}"
#: What a sync without ``sync_type`` is. Nango's nango.yaml parser makes every sync ``full``
#: unless it says ``incremental``; matching that keeps a file meaning the same in both.
_DEFAULT_SYNC_TYPE = SyncType.FULL


class _Report:
    """Collects problems while the loader walks the file (a ``config.values.ProblemReport``)."""

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
    folder = Path(directory).resolve().name
    raw_integrations = _expand_folder_keys(data.get("integrations"), folder, "integrations", report)
    syncs_by_key = _parse_integrations(raw_integrations, models, Path(directory), report)
    # `providers` is keyed by integration, so a `${PWD}` key there names the same one.
    raw_providers = _expand_folder_keys(data.get("providers"), folder, "providers", report)
    providers = parse_providers(raw_providers, syncs_by_key.keys(), environ, report)
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
    """Return the machine-readable view printed by ``hooksync check --json`` (ARCHITECTURE.md §3).

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
            for key, config in integrations.by_key.items()
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
        by_key=integrations or {},
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
        # Read as js-yaml, Nango's parser, reads it: it takes tabs (`runs: every hour<TAB>`)
        # and `label?` in a flow mapping where PyYAML alone does not, and refuses a key
        # given twice where PyYAML alone keeps the last.
        data = load_like_js_yaml(text)
    except BadInputError as error:
        report.error(error.code, FILENAME, f"invalid YAML at {error}")
        return None
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
    """One model's fields, each type kept as written.

    A type is a string (``string[]``, ``number | null``, a model name), a mapping (a literal
    object, its own ``?`` keys as written) or, as Nango's parser reads it, a list: an array
    whose items are any of the list's entries (``[{id: string}]`` is an array of that object,
    ``[string, number]`` of either).
    """
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


def _expand_folder_keys(raw: object, folder: str, section: str, report: _Report) -> object:
    """``raw`` with ``${PWD}`` in its keys replaced by ``folder``, as Nango's tooling does.

    A key that would then name an integration twice, or that the folder's name would make
    unusable, is an error and left out.
    """
    if not isinstance(raw, dict) or not any(
        isinstance(key, str) and _FOLDER_KEY in key for key in raw
    ):
        return raw
    expanded: dict[Any, Any] = {}
    for key, value in raw.items():
        if not (isinstance(key, str) and _FOLDER_KEY in key):
            if key in expanded:
                report.error(
                    "duplicate_key",
                    f"{section}.{key}",
                    f"{key!r} is declared twice: once as {_FOLDER_KEY!r}, which stands for "
                    f"the name of the folder holding {FILENAME} ({folder!r}); keep one",
                )
                continue
            expanded[key] = value
            continue
        name = key.replace(_FOLDER_KEY, folder)
        if not _SAFE_NAME.fullmatch(name):
            report.error(
                "invalid_name",
                f"{section}.{key}",
                f"{_FOLDER_KEY!r} stands for the name of the folder holding {FILENAME}, "
                f"which makes the integration key {name!r}; a key may only use letters, "
                "digits, '_', '-' and '.': rename the folder or write the key",
            )
            continue
        if name in expanded:
            report.error(
                "duplicate_key",
                f"{section}.{key}",
                f"{key!r} stands for {name!r} (the folder holding {FILENAME}), which is "
                "already declared; keep one",
            )
            continue
        expanded[name] = value
    return expanded


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
        track_deletes=read_bool(body, "track_deletes", False, path, report),
        auto_start=read_bool(body, "auto_start", True, path, report),
        description=_description(body.get("description"), f"{path}.description", report),
        version=_version(body.get("version"), f"{path}.version", report),
        scopes=_string_list(body.get("scopes"), f"{path}.scopes", report, split_commas=True),
        endpoints=_endpoints(body, path, report),
        input=read_optional_str(body.get("input"), f"{path}.input", report),
        time_limit_seconds=_time_limit(body, path, report),
    )
    # Every field is checked first so one run of `hooksync check` lists every mistake.
    return None if interval is None else sync


def _time_limit(body: Mapping[Any, Any], path: str, report: _Report) -> int | None:
    if body.get("time_limit") is None:
        return None
    try:
        return parse_duration(body["time_limit"])
    except BadInputError as error:
        report.error(error.code, f"{path}.time_limit", str(error))
        return None


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


def _sync_type(raw: object, path: str, report: _Report) -> SyncType:
    if raw is None:
        return _DEFAULT_SYNC_TYPE
    if isinstance(raw, str) and raw.strip().lower() in set(SyncType):
        return SyncType(raw.strip().lower())
    report.error("invalid_value", path, f"expected 'incremental' or 'full', got {raw!r}")
    return _DEFAULT_SYNC_TYPE


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


# --- cross-checks -------------------------------------------------------------------


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
