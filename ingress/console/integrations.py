"""Console: Integrations, one integration, and its Endpoints sub-tab (ARCHITECTURE.md §9).

The Endpoints tab is where Nango's guide sends a user to check whether a sync supports
webhooks: each sync with its models, frequency, sync type, ``auto_start``,
``track_deletes``, endpoints, the merging strategy its last run used per model, and its
webhook subscriptions. Read-only: everything comes from the integrations file, except the
connection counts and the last merging strategies (``workers.runs``).
"""

from __future__ import annotations

from typing import Any

from flask import abort
from sqlalchemy import func, select

from cache.db import read_scope
from cache.models import Connection
from config.integrations import IntegrationConfig
from ingress.auth import current_context
from ingress.console.blueprint import bp, page
from ingress.integrations import describe_integration
from workers.runs import last_merging_strategies

__all__ = ["DEFAULT_STRATEGY", "integration", "integration_endpoints", "integrations"]

#: What a model whose runs never called ``set_merging_strategy`` uses.
DEFAULT_STRATEGY = "default (override)"


@bp.get("/integrations")
def integrations() -> str:
    """Every integration of nango.yaml with its syncs, subscriptions and connection count."""
    ctx = current_context()
    with read_scope(ctx.sessions) as session:
        counts = dict(
            session.execute(
                select(Connection.provider_config_key, func.count()).group_by(
                    Connection.provider_config_key
                )
            ).all()
        )
    rows = [
        {
            **describe_integration(item),
            "subscriptions": _subscriptions(item),
            "connections": int(counts.get(item.key, 0)),
        }
        for item in ctx.integrations.by_key.values()
    ]
    return page("integrations.html", title="Integrations", section=_SECTION, rows=rows)


@bp.get("/integrations/<key>")
def integration(key: str) -> str:
    """One integration: its provider, syncs and connections."""
    ctx = current_context()
    config = _integration_or_404(key)
    with read_scope(ctx.sessions) as session:
        connections = session.scalars(
            select(Connection.connection_id)
            .where(Connection.provider_config_key == key)
            .order_by(Connection.id)
        ).all()
    return page(
        "integration.html",
        title=f"{key} · Integrations",
        section=_SECTION,
        tab="overview",
        integration=describe_integration(config),
        subscriptions=_subscriptions(config),
        connections=list(connections),
    )


@bp.get("/integrations/<key>/endpoints")
def integration_endpoints(key: str) -> str:
    """The Endpoints sub-tab: each sync's configuration and its webhook subscriptions."""
    ctx = current_context()
    config = _integration_or_404(key)
    described = describe_integration(config)
    with read_scope(ctx.sessions) as session:
        strategies = last_merging_strategies(session, key, list(config.syncs))
    syncs = [
        {**sync, "strategies": _strategies_of(sync["models"], strategies.get(sync["name"]))}
        for sync in described["syncs"]
    ]
    return page(
        "endpoints.html",
        title=f"{key} · Endpoints",
        section=_SECTION,
        tab="endpoints",
        integration=described,
        syncs=syncs,
    )


#: The nav entry these pages belong to.
_SECTION = "console.integrations"


def _integration_or_404(key: str) -> IntegrationConfig:
    config = current_context().integrations.by_key.get(key)
    if config is None:
        abort(404)
    return config


def _subscriptions(config: IntegrationConfig) -> list[str]:
    seen: dict[str, None] = {}
    for sync in config.syncs.values():
        seen.update(dict.fromkeys(sync.webhook_subscriptions))
    return list(seen)


def _strategies_of(
    models: list[str], last: dict[str, dict[str, str]] | None
) -> list[dict[str, Any]]:
    """``[{"model", "strategy", "ran"}]``: the strategy the sync's last run used per model."""
    rows = []
    for model in models:
        chosen = (last or {}).get(model)
        if chosen is None:
            text = DEFAULT_STRATEGY
        elif chosen.get("field"):
            text = f"{chosen.get('strategy')} (field: {chosen['field']})"
        else:
            text = str(chosen.get("strategy"))
        rows.append({"model": model, "strategy": text, "ran": last is not None})
    return rows
