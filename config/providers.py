"""Parse the ``providers:`` section of ``nango.yaml``, hooksync's extension to Nango's file.

Each ``providers.<key>`` entry becomes a ``ProviderConfig``: the API's base URL and auth,
its webhook secrets, and how to read its webhooks (signature, event type, connection,
delivery id, batch). A ``preset`` is deep-merged under the keys written in the file (see
``config/presets.py``).

``${VAR}`` (or ``${VAR:-default}``) in ``base_url`` and ``webhook_secret`` is read from the
``environ`` passed in; values that hold secrets are never echoed in a problem message.

Like the rest of the loader this never raises for what the file says: problems go to the
``report`` passed in and whatever is valid is still returned.
"""

from __future__ import annotations

import copy
import difflib
import re
from collections.abc import Collection, Mapping
from typing import Any, Literal, cast

from config.integrations import (
    AuthConfig,
    ConnectionRoute,
    FieldRef,
    ProviderConfig,
    SignatureConfig,
    WebhookConfig,
)
from config.presets import (
    BATCH_ROOT,
    MAX_TOLERANCE_SECONDS,
    PRESETS,
    REPLAY_SAFE_SCHEMES,
    SIGNATURE_SCHEMES,
    TIMESTAMP_HEADER_SCHEMES,
)
from config.values import ProblemReport, read_bool, read_optional_str

__all__ = ["parse_providers"]

_PROVIDER_KEYS = frozenset(
    {"preset", "base_url", "webhook_secret", "forward_webhooks", "auth", "webhook", "oauth_client"}
)
_WEBHOOK_KEYS = frozenset({"signature", "event_type", "connection", "delivery_id", "batch"})
_SIGNATURE_KEYS = frozenset(
    {"scheme", "header", "encoding", "prefix", "timestamp_header", "tolerance_seconds"}
)
_AuthType = Literal["bearer", "basic", "header", "query", "none"]
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def parse_providers(
    raw: object,
    integration_keys: Collection[str],
    environ: Mapping[str, str],
    report: ProblemReport,
) -> dict[str, ProviderConfig]:
    """Parse the ``providers`` section into one ``ProviderConfig`` per integration key.

    Args:
        raw: The ``providers`` value as read from YAML (None when the section is absent).
        integration_keys: Keys declared under ``integrations``; an entry for any other key
            is kept but warned about as unused.
        environ: Where ``${VAR}`` references are looked up.
        report: Receives every error and warning.

    Returns:
        integration key -> provider settings, for each entry that is a mapping.
    """
    if raw is None:
        return {}
    if not report.expect(raw, dict, "providers", "a mapping of integration key to settings"):
        return {}
    result: dict[str, ProviderConfig] = {}
    for key, body in cast(dict[Any, Any], raw).items():
        path = f"providers.{key}"
        if not report.expect(key, str, path, "an integration key (string)"):
            continue
        if key not in integration_keys:
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
    key: str, body: dict[Any, Any], path: str, environ: Mapping[str, str], report: ProblemReport
) -> ProviderConfig:
    report.unknown_keys(body, _PROVIDER_KEYS, path)
    preset = read_optional_str(body.get("preset"), f"{path}.preset", report)
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
        forward_webhooks=read_bool(body, "forward_webhooks", False, path, report),
        webhook=webhook,
        oauth_client=_oauth_client(
            body.get("oauth_client"), f"{path}.oauth_client", environ, report
        ),
    )


#: The keys of a provider's ``oauth_client``: what refreshing an OAuth2 token needs besides
#: the connection's refresh token, when the connections do not carry them.
_OAUTH_CLIENT_KEYS = frozenset({"token_url", "client_id", "client_secret"})


def _oauth_client(
    raw: object, path: str, environ: Mapping[str, str], report: ProblemReport
) -> dict[str, str]:
    """``{token_url, client_id, client_secret}``, each with ``${VAR}`` substituted."""
    if raw is None or not report.expect(
        raw, dict, path, "a mapping of token_url, client_id, client_secret"
    ):
        return {}
    body = cast(dict[Any, Any], raw)
    report.unknown_keys(body, _OAUTH_CLIENT_KEYS, path)
    client: dict[str, str] = {}
    for name in sorted(_OAUTH_CLIENT_KEYS & set(body)):
        item_path = f"{path}.{name}"
        value = body[name]
        if not isinstance(value, str):
            # Never echo what may be a secret: name its type only.
            report.error(
                "invalid_type",
                item_path,
                f"expected a string, got a {type(value).__name__}; quote it or use ${{VAR}}",
            )
            continue
        substituted = _substitute(value, item_path, environ, report)
        if substituted:
            client[name] = substituted
    url = client.get("token_url")
    if url is not None and not url.startswith(("http://", "https://")):
        report.error(
            "invalid_value",
            f"{path}.token_url",
            f"expected an http:// or https:// URL, got {url!r}",
        )
        del client["token_url"]
    return client


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
        if key == "connection" and isinstance(value, dict) and isinstance(old, dict):
            # A route reads one source: naming a path drops the preset's header, and back.
            if "path" in value or "header" in value:
                old = {k: v for k, v in old.items() if k not in ("path", "header")}
        if key == "signature" and isinstance(value, dict) and isinstance(old, dict):
            mergeable = value.get("scheme", old.get("scheme")) == old.get("scheme")
        if mergeable and isinstance(value, dict) and isinstance(old, dict):
            merged[key] = {**old, **value}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _substitute(
    value: str, path: str, environ: Mapping[str, str], report: ProblemReport
) -> str | None:
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
    raw: object, path: str, environ: Mapping[str, str], report: ProblemReport
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


def _base_url(
    raw: object, path: str, environ: Mapping[str, str], report: ProblemReport
) -> str | None:
    if raw is None or not report.expect(raw, str, path, "an http:// or https:// URL"):
        return None
    url = _substitute(cast(str, raw), path, environ, report)
    if url is None:
        return None
    if not url.startswith(("http://", "https://")):
        report.error("invalid_value", path, f"expected an http:// or https:// URL, got {url!r}")
        return None
    return url


def _auth(raw: object, path: str, report: ProblemReport) -> AuthConfig:
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


def _webhook(raw: object, path: str, report: ProblemReport) -> WebhookConfig:
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


def _signature(raw: object, path: str, report: ProblemReport) -> SignatureConfig:
    default = SignatureConfig(scheme="none")
    if raw is None:
        return default
    if isinstance(raw, str):
        raw = {"scheme": raw}
    if not report.expect(raw, dict, path, "a mapping with 'scheme' (or a scheme name)"):
        return default
    body = cast(dict[Any, Any], raw)
    _refuse_unknown_signature_keys(body, path, report)
    scheme = body.get("scheme")
    if scheme not in SIGNATURE_SCHEMES:
        report.error(
            "invalid_value",
            f"{path}.scheme",
            f"unknown signature scheme {scheme!r}; use one of {', '.join(SIGNATURE_SCHEMES)}",
        )
        return default
    strings = {
        k: read_optional_str(body.get(k), f"{path}.{k}", report)
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
    elif not 0 < tolerance <= MAX_TOLERANCE_SECONDS:
        report.error(
            "invalid_value",
            f"{path}.tolerance_seconds",
            f"expected a number of seconds from 1 to {MAX_TOLERANCE_SECONDS}, got {tolerance!r}",
        )
        tolerance = 300
    if scheme == "hmac-sha256" and not strings["header"]:
        report.error(
            "missing_field",
            f"{path}.header",
            "scheme 'hmac-sha256' needs 'header', the request header that carries the signature",
        )
    _refuse_unchecked_timestamp_keys(body, scheme, strings["timestamp_header"], path, report)
    return SignatureConfig(
        scheme=scheme,
        header=strings["header"],
        encoding=encoding,
        prefix=strings["prefix"] or "",
        timestamp_header=strings["timestamp_header"],
        tolerance_seconds=tolerance,
    )


def _refuse_unknown_signature_keys(body: dict[Any, Any], path: str, report: ProblemReport) -> None:
    """An error, not the usual warning: a misspelt ``timestamp_header`` would silently
    leave a provider open to replays."""
    for key in body:
        if key not in _SIGNATURE_KEYS:
            close = difflib.get_close_matches(str(key), _SIGNATURE_KEYS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            report.error(
                "unknown_key",
                f"{path}.{key}",
                f"unknown signature key {key!r}; {hint}known keys: "
                f"{', '.join(sorted(_SIGNATURE_KEYS))}",
            )


def _refuse_unchecked_timestamp_keys(
    body: dict[Any, Any],
    scheme: str,
    timestamp_header: str | None,
    path: str,
    report: ProblemReport,
) -> None:
    """Refuse timestamp settings the scheme would ignore: they promise a replay check that
    never happens (e.g. ``timestamp_header`` on ``github``, whose signature has no time)."""
    if "timestamp_header" in body and scheme not in TIMESTAMP_HEADER_SCHEMES:
        report.error(
            "invalid_value",
            f"{path}.timestamp_header",
            f"scheme {scheme!r} does not read a signed timestamp from a header, so "
            f"timestamp_header {body['timestamp_header']!r} would never be checked; remove it "
            f"(schemes that take it: {', '.join(TIMESTAMP_HEADER_SCHEMES)})",
        )
    checks_time = scheme in REPLAY_SAFE_SCHEMES or (
        scheme == "hmac-sha256" and timestamp_header is not None
    )
    if "tolerance_seconds" in body and not checks_time:
        needs = " without timestamp_header" if scheme == "hmac-sha256" else ""
        report.error(
            "invalid_value",
            f"{path}.tolerance_seconds",
            f"scheme {scheme!r}{needs} signs no timestamp, so tolerance_seconds "
            f"{body['tolerance_seconds']!r} would never be checked; remove it"
            + (" or set timestamp_header" if needs else ""),
        )


def _field_ref(
    raw: object, path: str, report: ProblemReport, *, header_allowed: bool = True
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
    if kind == "path" and isinstance(value, list) and header_allowed:
        return _fallback_paths(value, f"{path}.path", report)
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


def _fallback_paths(value: list[Any], path: str, report: ProblemReport) -> FieldRef | None:
    """``path: [event.type, type]``: body paths tried in order, the first holding a value wins."""
    paths: list[str] = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not _is_dotted_path(item):
            report.error(
                "invalid_value",
                f"{path}[{index}]",
                f"expected a dotted path such as 'event.type', got {item!r}",
            )
            return None
        paths.append(item)
    if not paths:
        report.error("invalid_value", path, "expected at least one dotted path, got []")
        return None
    return FieldRef(path=paths[0], fallback_paths=tuple(paths[1:]))


def _connection(raw: object, path: str, report: ProblemReport) -> ConnectionRoute | None:
    shape = "{path: ..., match: ...} or {header: ..., match: ...}"
    if raw is None or not report.expect(raw, dict, path, shape):
        return None
    body = cast(dict[Any, Any], raw)
    report.unknown_keys(body, frozenset({"path", "header", "match"}), path)
    route, header = body.get("path"), body.get("header")
    match = body.get("match", "connection_id")
    if route is None and header is None:
        report.error(
            "missing_field",
            f"{path}.path",
            "connection routing needs 'path', the body value that identifies the connection "
            "(or 'header', a request header that does)",
        )
        return None
    if route is not None and header is not None:
        report.error(
            "invalid_value",
            path,
            f"connection routing reads one value: give 'path' ({route!r}) or 'header' "
            f"({header!r}), not both",
        )
        return None
    if not report.expect(match, str, f"{path}.match", "'connection_id' or 'metadata.<key>'"):
        return None
    if header is not None:
        if not report.expect(header, str, f"{path}.header", "a header name") or not header:
            return None
    elif not report.expect(route, str, f"{path}.path", "a dotted path"):
        return None
    elif not _is_dotted_path(cast(str, route)):
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
    if header is not None:
        return ConnectionRoute(header=header, match=match)
    return ConnectionRoute(path=route, match=match)


def _is_dotted_path(value: str) -> bool:
    return all(part.strip() for part in value.split("."))
