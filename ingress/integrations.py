"""What the integrations file declares, read-only: integrations, syncs (ARCHITECTURE.md §7).

``GET /integrations/<key>`` is how an operator checks "does this sync support webhooks"
(ARCHITECTURE.md §9): each sync with its models, frequency and webhook subscriptions.
``GET /scripts/config`` answers in Nango's shape (a JSON array of ``StandardNangoConfig``,
what the official Node client's ``getScriptsConfig()`` returns). ``GET
/webhooks/signing-secret`` shows the app's Standard Webhooks secret (ARCHITECTURE.md §8).

Nothing here returns a provider's ``webhook_secret``, its base URL or any credential: the
views build their bodies from an allow-list of sync fields, never from the provider config.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask import Blueprint, Response, jsonify, request

from config.errors import BadInputError
from config.integrations import IntegrationConfig, ModelConfig, SyncConfig
from ingress.auth import current_context, require_api_key
from ingress.params import choice_param
from workers.app_signatures import whsec_secret

__all__ = ["SIGNATURE_HEADER", "bp", "describe_integration", "scripts_config", "signing_secrets"]

bp = Blueprint("integrations", __name__)

#: The header the official Nango clients verify (``verifyIncomingWebhookRequest``).
SIGNATURE_HEADER = "X-Nango-Hmac-Sha256"

#: ``GET /scripts/config?format=``: Nango's two shapes (the client sends ``nango``).
SCRIPT_FORMATS = ("nango", "openai")


@bp.get("/integrations")
@require_api_key
def list_integrations() -> Response:
    """``{"integrations": [...]}``: each with its sync names and all the events it takes."""
    ctx = current_context()
    return jsonify(
        {
            "integrations": [
                {
                    "unique_key": integration.key,
                    "provider": _provider_name(integration),
                    "syncs": list(integration.syncs),
                    "webhook_subscriptions": _subscriptions(integration),
                }
                for integration in ctx.integrations.by_key.values()
            ]
        }
    )


@bp.get("/integrations/<key>")
@require_api_key
def get_integration(key: str) -> Response:
    """One integration with every sync's models, frequency and webhook subscriptions."""
    ctx = current_context()
    integration = ctx.integrations.by_key.get(key)
    if integration is None:
        known = ", ".join(sorted(ctx.integrations.by_key)) or "none"
        raise BadInputError(
            f"no integration {key[:100]!r} in nango.yaml (configured: {known}); "
            "list them with GET /integrations",
            code="unknown_integration",
            field="key",
        )
    return jsonify({"integration": describe_integration(integration)})


@bp.get("/scripts/config")
@require_api_key
def get_scripts_config() -> Response:
    """Nango's ``GET /scripts/config``: a JSON array, one entry per integration.

    ``?format=openai`` is Nango's other shape, ``{"data": [OpenAIFunction]}``: one function
    per *action*. hooksync runs no actions (nango.yaml's are parsed and ignored), so that
    list is empty rather than refused: an agent asking for its tools gets none, not an error.
    """
    ctx = current_context()
    script_format = choice_param("format", request.args.get("format"), SCRIPT_FORMATS)
    if script_format == "openai":
        return jsonify({"data": []})
    return jsonify(scripts_config(ctx.integrations.by_key.values(), ctx.integrations.models))


@bp.get("/webhooks/signing-secret")
@require_api_key
def get_signing_secret() -> Response:
    """The Standard Webhooks secret(s) an app configures to verify hooksync's webhooks.

    During a rotation (two ``HOOKSYNC_WEBHOOK_SIGNING_KEY`` values) every active key is
    listed, the one that also signs ``X-Nango-Hmac-Sha256`` first.
    """
    secrets = signing_secrets(current_context().settings.webhook_signing_keys)
    response = jsonify(
        {
            "standard_webhooks_secret": secrets[0] if secrets else None,
            "standard_webhooks_secrets": secrets,
            "header": SIGNATURE_HEADER,
        }
    )
    # A secret: keep it out of shared caches and browser history.
    response.headers["Cache-Control"] = "no-store"
    return response


def signing_secrets(keys: Iterable[str]) -> list[str]:
    """The ``whsec_…`` secrets of the signing keys, the active (signing) one first."""
    return [whsec_secret(key) for key in keys]


def describe_integration(integration: IntegrationConfig) -> dict[str, Any]:
    """The ``GET /integrations/<key>`` view of one integration (no secrets)."""
    return {
        "unique_key": integration.key,
        "provider": _provider_name(integration),
        "syncs": [_describe_sync(sync) for sync in integration.syncs.values()],
    }


def scripts_config(
    integrations: Iterable[IntegrationConfig], models: dict[str, ModelConfig]
) -> list[dict[str, Any]]:
    """Nango's ``StandardNangoConfig[]`` for ``integrations`` (actions are not supported).

    Args:
        integrations: The ``IntegrationConfig`` values to describe, in order.
        models: Every model of the file, for each sync's ``models`` schema.
    """
    return [
        {
            "providerConfigKey": integration.key,
            "provider": _provider_name(integration),
            "syncs": [_nango_sync(sync, models) for sync in integration.syncs.values()],
            "actions": [],
            "on-events": [],
        }
        for integration in integrations
    ]


def _describe_sync(sync: SyncConfig) -> dict[str, Any]:
    return {
        "name": sync.name,
        "models": list(sync.output),
        "runs": sync.runs,
        "interval_seconds": sync.interval_seconds,
        "sync_type": sync.sync_type,
        "track_deletes": sync.track_deletes,
        "auto_start": sync.auto_start,
        "webhook_subscriptions": list(sync.webhook_subscriptions),
        "description": sync.description,
        "endpoints": [dict(endpoint) for endpoint in sync.endpoints],
    }


def _nango_sync(sync: SyncConfig, models: dict[str, ModelConfig]) -> dict[str, Any]:
    """One ``NangoSyncConfig`` as Nango's server builds it (its keys, its casing)."""
    return {
        "name": sync.name,
        "type": "sync",
        "runs": sync.runs,
        "returns": list(sync.output),
        "description": sync.description,
        "track_deletes": sync.track_deletes,
        "auto_start": sync.auto_start,
        "attributes": {},
        "scopes": list(sync.scopes),
        "version": sync.version,
        "is_public": False,
        "pre_built": False,
        "endpoints": [dict(endpoint) for endpoint in sync.endpoints],
        "input": _model_schema(models[sync.input]) if sync.input in models else None,
        "enabled": True,
        "models": [_model_schema(models[name]) for name in sync.output if name in models],
        "sync_type": sync.sync_type,
        "webhookSubscriptions": list(sync.webhook_subscriptions),
        "json_schema": None,
    }


def _model_schema(model: ModelConfig) -> dict[str, Any]:
    """Nango's legacy model schema: ``{"name", "fields": [{"name", "type"}]}``."""
    return {
        "name": model.name,
        "fields": [
            {
                "name": name,
                "type": value,
                **({"optional": True} if name in model.optional else {}),
            }
            for name, value in model.fields.items()
        ],
    }


def _provider_name(integration: IntegrationConfig) -> str:
    # Nango's ``provider`` is the provider template; a preset is ours, else the key itself.
    return integration.provider.preset or integration.key


def _subscriptions(integration: IntegrationConfig) -> list[str]:
    """The union of the syncs' webhook subscriptions, in first-seen order."""
    seen: dict[str, None] = {}
    for sync in integration.syncs.values():
        seen.update(dict.fromkeys(sync.webhook_subscriptions))
    return list(seen)
