"""The integrations file (nango.yaml v2 + hooksync's ``providers`` extension) as typed values.

The loader (``load_integrations``) lives in ``config/loader.py``; this module only holds the
frozen values every other package reads, so importing it costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

__all__ = [
    "AuthConfig",
    "ConnectionRoute",
    "FieldRef",
    "IntegrationConfig",
    "Integrations",
    "ModelConfig",
    "Problem",
    "ProviderConfig",
    "SignatureConfig",
    "SyncConfig",
    "WebhookConfig",
]


class SyncType(StrEnum):
    """A sync's ``sync_type`` in nango.yaml."""

    INCREMENTAL = "incremental"  # polls fetch what changed since the last success
    FULL = "full"  # every poll fetches everything


@dataclass(frozen=True)
class Problem:
    """One error or warning found in the integrations file.

    ``path`` is dotted from the file's root, e.g. ``integrations.hubspot.syncs.contacts.runs``.
    """

    code: str
    message: str
    path: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class ModelConfig:
    name: str
    #: field name -> type string as written ("string", "number | null", ...); a trailing
    #: ``?`` on the name is stripped and recorded in ``optional``.
    fields: dict[str, object]
    optional: frozenset[str] = frozenset()


@dataclass(frozen=True)
class SyncConfig:
    name: str
    integration: str  # the provider_config_key
    runs: str
    interval_seconds: int
    webhook_subscriptions: tuple[str, ...] = ()
    output: tuple[str, ...] = ()
    #: As in Nango, a sync that does not say ``incremental`` is ``full``.
    sync_type: SyncType = SyncType.FULL
    track_deletes: bool = False
    auto_start: bool = True
    description: str = ""
    version: str | None = None
    scopes: tuple[str, ...] = ()
    endpoints: tuple[dict[str, str], ...] = ()
    input: str | None = None
    #: hooksync's own ``time_limit``: this sync's soft time limit per run, in seconds
    #: (None: ``HOOKSYNC_RUN_SOFT_LIMIT_SECONDS``).
    time_limit_seconds: int | None = None

    def soft_limit_seconds(self, default: float, hard_limit: float) -> float:
        """The soft limit of this sync's runs: its own, or ``default``; always below the
        worker's hard limit, which kills the process whatever a sync asks for."""
        if self.time_limit_seconds is None:
            return default
        return min(float(self.time_limit_seconds), hard_limit * 0.9)

    def is_subscribed_to(self, event_type: str | None) -> bool:
        """True when a webhook of ``event_type`` should run this sync's webhook handler."""
        if "*" in self.webhook_subscriptions:
            return True
        return event_type is not None and event_type in self.webhook_subscriptions


@dataclass(frozen=True)
class FieldRef:
    """Where a value sits in an incoming webhook: a header, or a dotted path in the JSON body.

    ``fallback_paths`` are body paths tried in order when ``path`` holds nothing (Slack's
    event type is ``event.type`` in Events API callbacks and ``type`` in interactivity
    payloads); YAML writes them as a list, ``{path: [event.type, type]}``.
    """

    header: str | None = None
    path: str | None = None
    fallback_paths: tuple[str, ...] = ()

    @property
    def paths(self) -> tuple[str, ...]:
        """Every body path to try, in order (empty for a header)."""
        return (self.path, *self.fallback_paths) if self.path is not None else ()


@dataclass(frozen=True)
class ConnectionRoute:
    """How a webhook finds its connection: the body value at ``path`` (or the request
    header ``header``, e.g. Shopify's ``X-Shopify-Shop-Domain``) is compared with ``match``,
    either ``connection_id`` or ``metadata.<dotted key>`` of each connection."""

    path: str | None = None
    match: str = "connection_id"
    header: str | None = None

    def __post_init__(self) -> None:
        if (self.path is None) == (self.header is None):
            raise ValueError(
                f"a connection route reads exactly one of path or header, got "
                f"path={self.path!r} header={self.header!r}"
            )

    @property
    def source(self) -> str:
        """Where the value is read, as messages name it: ``header 'X'`` or ``body path 'p'``."""
        return f"header {self.header!r}" if self.header else f"body path {self.path!r}"


@dataclass(frozen=True)
class SignatureConfig:
    """A signature scheme name (``hmac-sha256``, ``github``, ``none``, ...) and its options."""

    scheme: str
    header: str | None = None
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    timestamp_header: str | None = None
    tolerance_seconds: int = 300


@dataclass(frozen=True)
class WebhookConfig:
    signature: SignatureConfig = SignatureConfig(scheme="none")
    event_type: FieldRef | None = None
    connection: ConnectionRoute | None = None
    delivery_id: FieldRef | None = None
    batch: FieldRef | None = None


@dataclass(frozen=True)
class AuthConfig:
    """How the connection's credentials are sent: ``bearer``, ``basic``, ``header`` (with
    ``name``), ``query`` (with ``name``) or ``none``."""

    type: Literal["bearer", "basic", "header", "query", "none"] = "bearer"
    name: str | None = None


@dataclass(frozen=True)
class ProviderConfig:
    key: str
    preset: str | None = None
    base_url: str | None = None
    auth: AuthConfig = AuthConfig()
    #: Several secrets may be active at once during rotation; any one verifying is enough.
    webhook_secrets: tuple[str, ...] = field(default=(), repr=False)
    forward_webhooks: bool = False
    webhook: WebhookConfig = WebhookConfig()
    #: ``oauth_client``: the integration's OAuth client (``token_url``, ``client_id``,
    #: ``client_secret``), used to refresh a connection's token when its own credentials do
    #: not carry them.
    oauth_client: dict[str, str] = field(default_factory=dict, repr=False, hash=False)


@dataclass(frozen=True)
class IntegrationConfig:
    key: str
    syncs: dict[str, SyncConfig]
    provider: ProviderConfig


@dataclass(frozen=True)
class Integrations:
    """Everything the integrations file declares, plus what was wrong with it."""

    #: Each integration by its key (``provider_config_key``).
    by_key: dict[str, IntegrationConfig] = field(default_factory=dict)
    models: dict[str, ModelConfig] = field(default_factory=dict)
    errors: tuple[Problem, ...] = ()
    warnings: tuple[Problem, ...] = ()

    def get_sync(self, integration: str, sync: str) -> SyncConfig | None:
        config = self.by_key.get(integration)
        return config.syncs.get(sync) if config else None
