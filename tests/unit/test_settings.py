"""Settings from HOOKSYNC_* variables: defaults, and one clear line for each bad value."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.settings import load_log_options, load_settings

#: All three secrets given, so loading touches no file (this tier does no I/O).
SECRETS = {
    "HOOKSYNC_SECRET_KEY": "api-key",
    "HOOKSYNC_WEBHOOK_SIGNING_KEY": "new-key, old-key",
    "HOOKSYNC_ENCRYPTION_KEY": base64.urlsafe_b64encode(b"k" * 32).decode(),
    "HOOKSYNC_VAR_DIR": "/nonexistent/var",
}


def test_defaults_are_the_embedded_setup() -> None:
    settings = load_settings(SECRETS)
    assert settings.database_url == "sqlite:////nonexistent/var/hooksync.db"
    assert settings.redis_url is None
    assert (settings.host, settings.port) == ("127.0.0.1", 3003)
    assert settings.notify_empty is True
    assert settings.app_webhook_urls == ()
    assert settings.integrations_dir == Path("integrations").resolve()
    assert settings.metrics_public is False


def test_metrics_can_be_made_public() -> None:
    assert load_settings({**SECRETS, "HOOKSYNC_METRICS_PUBLIC": "true"}).metrics_public is True


def test_logs_default_to_text_at_info_and_take_any_case() -> None:
    settings = load_settings(SECRETS)
    assert (settings.log_format, settings.log_level) == ("text", "INFO")
    settings = load_settings(
        {**SECRETS, "HOOKSYNC_LOG_FORMAT": "JSON", "HOOKSYNC_LOG_LEVEL": "debug"}
    )
    assert (settings.log_format, settings.log_level) == ("json", "DEBUG")
    assert load_log_options({"HOOKSYNC_LOG_FORMAT": "json"}) == ("json", "INFO")


def test_two_signing_keys_during_rotation_sign_with_the_first() -> None:
    settings = load_settings(SECRETS)
    assert settings.webhook_signing_keys == ("new-key", "old-key")
    assert settings.webhook_signing_key == "new-key"


def test_secrets_never_appear_in_the_repr() -> None:
    text = repr(load_settings(SECRETS))
    assert "api-key" not in text and "new-key" not in text


def test_postgres_urls_get_the_installed_driver() -> None:
    settings = load_settings({**SECRETS, "HOOKSYNC_DATABASE_URL": "postgres://u:p@db/hooksync"})
    assert settings.database_url == "postgresql+psycopg://u:p@db/hooksync"


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("HOOKSYNC_PORT", "abc", "HOOKSYNC_PORT must be a whole number, got 'abc'"),
        ("HOOKSYNC_PORT", "70000", "HOOKSYNC_PORT must be from 1 to 65535, got '70000'"),
        (
            "HOOKSYNC_NOTIFY_EMPTY",
            "maybe",
            "HOOKSYNC_NOTIFY_EMPTY must be true or false, got 'maybe'",
        ),
        ("HOOKSYNC_APP_WEBHOOK_URLS", "ftp://app/hook", "got 'ftp://app/hook'"),
        ("HOOKSYNC_REDIS_URL", "memcached://x", "HOOKSYNC_REDIS_URL='memcached://x' must start"),
        ("HOOKSYNC_DATABASE_URL", "mysql://x/y", "HOOKSYNC_DATABASE_URL='mysql://x/y'"),
        ("HOOKSYNC_TICK_SECONDS", "0", "HOOKSYNC_TICK_SECONDS must be at least 0.1, got '0'"),
        ("HOOKSYNC_TICK_SECONDS", "nan", "HOOKSYNC_TICK_SECONDS must be a finite number"),
        ("HOOKSYNC_TICK_SECONDS", "inf", "HOOKSYNC_TICK_SECONDS must be a finite number"),
        ("HOOKSYNC_ENCRYPTION_KEY", "short", "HOOKSYNC_ENCRYPTION_KEY must be 32 bytes"),
        ("HOOKSYNC_WEBHOOK_SIGNING_KEY", " , ", "HOOKSYNC_WEBHOOK_SIGNING_KEY=' , ' lists no key"),
        (
            "HOOKSYNC_LOG_FORMAT",
            "logfmt",
            "HOOKSYNC_LOG_FORMAT must be one of text, json, got 'logfmt'",
        ),
        ("HOOKSYNC_LOG_LEVEL", "loud", "HOOKSYNC_LOG_LEVEL must be one of DEBUG, INFO,"),
        (
            "HOOKSYNC_METRICS_PUBLIC",
            "open",
            "HOOKSYNC_METRICS_PUBLIC must be true or false, got 'open'",
        ),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable_and_the_value(
    name: str, value: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**SECRETS, name: value})
    message = str(caught.value)
    assert fragment in message
    assert "\n" not in message


def test_a_database_password_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**SECRETS, "HOOKSYNC_DATABASE_URL": "mysql://user:hunter2@db/x"})
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("HOOKSYNC_APP_WEBHOOK_URLS", "htps://app.example/hook?token=hunter2"),
        ("HOOKSYNC_APP_WEBHOOK_URLS", "ftp://user:hunter2@app.example/hook"),
        ("HOOKSYNC_REDIS_URL", "memcached://cache?password=hunter2"),
    ],
)
def test_a_token_in_a_bad_url_is_not_echoed(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({**SECRETS, name: value})
    assert "hunter2" not in str(caught.value)
    assert name in str(caught.value)
