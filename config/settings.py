"""Typed settings from ``HOOKSYNC_*`` environment variables (ARCHITECTURE.md §3).

Nothing here runs at import time: processes call ``load_settings()`` at start-up, and a
missing or malformed value stops them with one line naming the variable and the value.
Secrets left unset are generated once into ``var/secrets.json`` so that every process on
the machine (web, worker, beat) agrees on them.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import math
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from config.errors import ConfigError
from config.logs import LOG_FORMATS, LOG_LEVELS

__all__ = ["Settings", "load_log_options", "load_settings", "stored_secret_key"]

#: Secrets generated on first run when their variable is unset.
_GENERATED_SECRETS = ("secret_key", "webhook_signing_key", "encryption_key")


@dataclass(frozen=True)
class Settings:
    secret_key: str = field(repr=False)
    #: The first key signs; all of them are listed in Standard Webhooks signatures so an
    #: app can rotate its secret without dropping a delivery.
    webhook_signing_keys: tuple[str, ...] = field(repr=False)
    encryption_key: str = field(repr=False)
    database_url: str
    #: None means: start (or reuse) the embedded Redis under ``var_dir``.
    redis_url: str | None
    app_webhook_urls: tuple[str, ...]
    integrations_dir: Path
    host: str
    port: int
    notify_empty: bool
    var_dir: Path
    max_webhook_bytes: int = 1024 * 1024
    webhook_tolerance_seconds: int = 300
    #: ``HOOKSYNC_TICK_SECONDS``: how often beat runs the tick, whose sweeper takes back what a
    #: dead worker held: run lease + tick (11 s) and send lease + tick (13 s) stay inside the
    #: 15 s takeover bound with room for the takeover's own dispatch.
    tick_seconds: float = 3.0
    lease_seconds: int = 90
    #: ``HOOKSYNC_RUN_LEASE_SECONDS``: a running run's lease. Its worker renews it every
    #: third of it; a dead worker's run is taken over once it ran out, at the next tick.
    run_lease_seconds: float = 8.0
    #: ``HOOKSYNC_RUN_SOFT_LIMIT_SECONDS``: a run still executing after this is stopped and
    #: ends ``ERROR`` (``timeout``).
    run_soft_limit_seconds: float = 1800.0
    #: ``HOOKSYNC_RUN_HARD_LIMIT_SECONDS``: the task running it is killed after this (Celery
    #: ``time_limit``), for a script that ignores the soft limit.
    run_hard_limit_seconds: float = 2100.0
    #: ``HOOKSYNC_TOKEN_REFRESH_MARGIN_SECONDS``: an OAuth2 access token (or a GitHub App
    #: installation token) expiring within this many seconds is refreshed before it is used,
    #: so a token never runs out halfway through a run's first request.
    token_refresh_margin_seconds: float = 300.0
    #: Serve ``/metrics`` without the API key (for a Prometheus that cannot send one).
    metrics_public: bool = False
    #: ``HOOKSYNC_LOG_FORMAT``: ``text`` or ``json`` (config/logs.py).
    log_format: str = "text"
    #: ``HOOKSYNC_LOG_LEVEL``: the lowest level logged.
    log_level: str = "INFO"
    #: ``HOOKSYNC_TRUSTED_PROXIES``: addresses or networks of the proxies directly in front
    #: of ``web``; only requests from them have their ``X-Forwarded-*`` headers honoured.
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    #: ``HOOKSYNC_PUBLIC_URL``: the base URL providers call (``https://hooks.example.com``),
    #: used to rebuild the URL a URL-signing provider (HubSpot v3) signed.
    public_url: str | None = None

    @property
    def webhook_signing_key(self) -> str:
        return self.webhook_signing_keys[0]

    @property
    def database_is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every ``HOOKSYNC_*`` variable.

    Raises:
        ConfigError: one line naming the variable and its bad value.
    """
    env = os.environ if environ is None else environ
    var_dir = Path(env.get("HOOKSYNC_VAR_DIR", "var")).resolve()
    log_format, log_level = load_log_options(env)
    generated = _load_or_generate_secrets(var_dir, env)

    signing_keys = tuple(
        key.strip() for key in generated["webhook_signing_key"].split(",") if key.strip()
    )
    if not signing_keys:
        raise ConfigError(
            f"HOOKSYNC_WEBHOOK_SIGNING_KEY={env.get('HOOKSYNC_WEBHOOK_SIGNING_KEY')!r} "
            "lists no key; give one, or two comma-separated during rotation"
        )
    return Settings(
        secret_key=generated["secret_key"],
        webhook_signing_keys=signing_keys,
        encryption_key=_parse_encryption_key(generated["encryption_key"]),
        database_url=_parse_database_url(env, var_dir),
        redis_url=_parse_redis_url(env),
        app_webhook_urls=_parse_urls(env, "HOOKSYNC_APP_WEBHOOK_URLS"),
        integrations_dir=Path(env.get("HOOKSYNC_INTEGRATIONS_DIR", "integrations")).resolve(),
        host=env.get("HOOKSYNC_HOST", "127.0.0.1"),
        port=_parse_int(env, "HOOKSYNC_PORT", 3003, minimum=1, maximum=65535),
        notify_empty=_parse_bool(env, "HOOKSYNC_NOTIFY_EMPTY", True),
        var_dir=var_dir,
        max_webhook_bytes=_parse_int(env, "HOOKSYNC_MAX_WEBHOOK_BYTES", 1024 * 1024, minimum=1),
        webhook_tolerance_seconds=_parse_int(
            env, "HOOKSYNC_WEBHOOK_TOLERANCE_SECONDS", 300, minimum=1
        ),
        tick_seconds=_parse_float(env, "HOOKSYNC_TICK_SECONDS", 3.0, minimum=0.1),
        lease_seconds=_parse_int(env, "HOOKSYNC_LEASE_SECONDS", 90, minimum=5),
        run_lease_seconds=_parse_float(
            env, "HOOKSYNC_RUN_LEASE_SECONDS", DEFAULT_RUN_LEASE_SECONDS, minimum=3.0
        ),
        **_parse_run_limits(env),
        token_refresh_margin_seconds=_parse_float(
            env, "HOOKSYNC_TOKEN_REFRESH_MARGIN_SECONDS", 300.0, minimum=0.0
        ),
        metrics_public=_parse_bool(env, "HOOKSYNC_METRICS_PUBLIC", False),
        log_format=log_format,
        log_level=log_level,
        trusted_proxies=_parse_networks(env, "HOOKSYNC_TRUSTED_PROXIES"),
        public_url=_parse_public_url(env, "HOOKSYNC_PUBLIC_URL"),
    )


#: Defaults of the run lease and time limits (see ``Settings``).
DEFAULT_RUN_LEASE_SECONDS = 8.0
DEFAULT_RUN_SOFT_LIMIT_SECONDS = 1800.0
#: The hard limit's default margin over the soft one: time for the stopped script to unwind.
HARD_LIMIT_MARGIN_SECONDS = 300.0


def _parse_run_limits(env: Mapping[str, str]) -> dict[str, float]:
    soft = _parse_float(
        env, "HOOKSYNC_RUN_SOFT_LIMIT_SECONDS", DEFAULT_RUN_SOFT_LIMIT_SECONDS, minimum=1.0
    )
    hard = _parse_float(
        env, "HOOKSYNC_RUN_HARD_LIMIT_SECONDS", soft + HARD_LIMIT_MARGIN_SECONDS, minimum=1.0
    )
    if hard <= soft:
        raise ConfigError(
            f"HOOKSYNC_RUN_HARD_LIMIT_SECONDS={env.get('HOOKSYNC_RUN_HARD_LIMIT_SECONDS')!r} "
            f"must be above HOOKSYNC_RUN_SOFT_LIMIT_SECONDS ({soft:g}): the soft limit stops "
            "the script, the hard one kills what ignored it"
        )
    return {"run_soft_limit_seconds": soft, "run_hard_limit_seconds": hard}


def load_log_options(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``(HOOKSYNC_LOG_FORMAT, HOOKSYNC_LOG_LEVEL)``, validated.

    Read on their own by what configures logging before (or without) the whole settings:
    gunicorn's logger class, Celery's ``setup_logging``, the ``hooksync`` command.

    Raises:
        ConfigError: A value that is not one of the choices, named with the variable.
    """
    env = os.environ if environ is None else environ
    return (
        _parse_choice(env, "HOOKSYNC_LOG_FORMAT", "text", LOG_FORMATS, lower=True),
        _parse_choice(env, "HOOKSYNC_LOG_LEVEL", "INFO", LOG_LEVELS, lower=False),
    )


def stored_secret_key(environ: Mapping[str, str] | None = None) -> str | None:
    """The API key the processes of this machine use, without generating one.

    ``HOOKSYNC_SECRET_KEY`` when set, else the key ``var/secrets.json`` holds (written by
    the first process that started), else None: a client such as the ``hooksync`` command
    must not create a key the server does not know.

    Raises:
        ConfigError: ``var/secrets.json`` exists but is not a valid secrets file.
    """
    env = os.environ if environ is None else environ
    if env.get("HOOKSYNC_SECRET_KEY"):
        return env["HOOKSYNC_SECRET_KEY"]
    path = Path(env.get("HOOKSYNC_VAR_DIR", "var")).resolve() / "secrets.json"
    if not path.exists():
        return None
    return _read_secrets_file(path)["secret_key"]


def _load_or_generate_secrets(var_dir: Path, env: Mapping[str, str]) -> dict[str, str]:
    values = {name: env.get(f"HOOKSYNC_{name.upper()}", "") for name in _GENERATED_SECRETS}
    if all(values.values()):
        return values
    stored = _read_or_create_secrets_file(var_dir / "secrets.json")
    return {name: value or stored[name] for name, value in values.items()}


def _read_or_create_secrets_file(path: Path) -> dict[str, str]:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # var/: owner-only, like its files
    fresh = {
        "secret_key": secrets.token_urlsafe(32),
        "webhook_signing_key": secrets.token_urlsafe(32),
        "encryption_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    }
    # O_EXCL: when web, worker and beat start together exactly one of them writes the file
    # and the others read what it wrote, so all processes share the same secrets.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secrets_file(path)
    with os.fdopen(fd, "w") as handle:
        json.dump(fresh, handle)
    return fresh


def _read_secrets_file(path: Path) -> dict[str, str]:
    for _ in range(50):  # the creator may still be writing it
        try:
            data = json.loads(path.read_text() or "null")
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and all(isinstance(data.get(n), str) for n in _GENERATED_SECRETS):
            return data
        time.sleep(0.05)
    raise ConfigError(f"{path} is not a valid secrets file; delete it to generate new secrets")


def _parse_encryption_key(value: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(value.encode())
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise ConfigError(
            "HOOKSYNC_ENCRYPTION_KEY must be 32 bytes in url-safe base64 (44 characters), "
            f"got a value of {len(value)} characters"
        )
    return value


def _parse_database_url(env: Mapping[str, str], var_dir: Path) -> str:
    url = env.get("HOOKSYNC_DATABASE_URL", "")
    if not url:
        return f"sqlite:///{var_dir / 'hooksync.db'}"
    scheme = url.split(":", 1)[0]
    if "://" not in url or scheme.split("+")[0] not in {"sqlite", "postgresql", "postgres"}:
        raise ConfigError(
            f"HOOKSYNC_DATABASE_URL={_redact(url)!r} is not a SQLite or Postgres SQLAlchemy URL; "
            "use sqlite:///path/to.db or postgresql+psycopg://user:pass@host/db"
        )
    if scheme.startswith("postgres") and not scheme.startswith("postgresql+"):
        # SQLAlchemy needs a driver name; psycopg (v3) is the one we install.
        url = "postgresql+psycopg" + url[len(scheme) :]
    return url


def _parse_redis_url(env: Mapping[str, str]) -> str | None:
    url = env.get("HOOKSYNC_REDIS_URL", "")
    if not url:
        return None
    if urlparse(url).scheme not in {"redis", "rediss", "unix"}:
        raise ConfigError(
            f"HOOKSYNC_REDIS_URL={_redact(url)!r} must start with redis://, rediss:// or unix://"
        )
    return url


def _parse_urls(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    urls = tuple(part.strip() for part in env.get(name, "").split(",") if part.strip())
    for url in urls:
        parsed = urlparse(url)
        if parsed.scheme not in {"http", "https"} or not parsed.netloc:
            raise ConfigError(f"{name} must list http:// or https:// URLs, got {_redact(url)!r}")
    return urls


def _parse_networks(
    env: Mapping[str, str], name: str
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Comma-separated IP addresses or CIDR networks (``10.0.0.5, 10.1.0.0/16, ::1``)."""
    networks = []
    for part in (item.strip() for item in env.get(name, "").split(",")):
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(
                f"{name} must list IP addresses or CIDR networks (e.g. 10.0.0.5,10.1.0.0/16), "
                f"got {part!r}"
            ) from None
    return tuple(networks)


def _parse_public_url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    parsed = urlparse(raw)
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        raise ConfigError(
            f"{name} must be the http:// or https:// base URL providers call "
            f"(e.g. https://hooks.example.com), got {_redact(raw)!r}"
        )
    if parsed.query or parsed.fragment or parsed.username or parsed.password:
        raise ConfigError(
            f"{name} must be a base URL without credentials, query or fragment, got "
            f"{_redact(raw)!r}"
        )
    # No trailing slash: the request path (which starts with one) is appended to it.
    return raw.rstrip("/")


def _parse_int(
    env: Mapping[str, str], name: str, default: int, *, minimum: int, maximum: int | None = None
) -> int:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
        raise ConfigError(f"{name} must be {bounds}, got {raw!r}")
    return value


def _parse_float(env: Mapping[str, str], name: str, default: float, *, minimum: float) -> float:
    raw = env.get(name, "")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        # float() takes "nan" and "inf": a beat ticking never (or at NaN) is no schedule.
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {raw!r}")
    return value


def _parse_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {env[name]!r}")


def _parse_choice(
    env: Mapping[str, str], name: str, default: str, choices: tuple[str, ...], *, lower: bool
) -> str:
    raw = env.get(name, "")
    value = raw.strip().lower() if lower else raw.strip().upper()
    if not value:
        return default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return value


def _redact(url: str) -> str:
    """Hide the password and the query of a URL so they never reach a log or an error.

    App endpoints often carry their token in the query (``?token=...``).
    """
    parsed = urlparse(url)
    if parsed.password:
        url = url.replace(f":{parsed.password}@", ":***@")
    if parsed.query:
        url = url.split("?", 1)[0] + "?***"
    return url
