"""The proxy settings and their pure parts (config/settings.py, ingress/proxy.py)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from config.errors import ConfigError
from config.settings import load_settings
from ingress.proxy import is_trusted, public_request_url

NETWORKS = (ipaddress.ip_network("10.0.0.0/24"), ipaddress.ip_network("::1"))


def settings(tmp_path: Path, **env: str):  # type: ignore[no-untyped-def]
    base = {
        "HOOKSYNC_VAR_DIR": str(tmp_path),
        "HOOKSYNC_SECRET_KEY": "k",
        "HOOKSYNC_WEBHOOK_SIGNING_KEY": "s",
        # All three secrets given: nothing is generated into the var dir.
        "HOOKSYNC_ENCRYPTION_KEY": "A" * 43 + "=",
    }
    return load_settings({**base, **env})


@pytest.mark.parametrize(
    ("address", "trusted"),
    [("10.0.0.5", True), ("10.0.1.5", False), ("::1", True), ("", False), (None, False),
     ("unix:/run/gunicorn.sock", False), ("fe80::1%eth0", False)],
)  # fmt: skip
def test_only_listed_peers_are_trusted(address: str | None, trusted: bool) -> None:
    assert is_trusted(address, NETWORKS) is trusted


def test_public_url_replaces_the_root_and_keeps_path_and_query() -> None:
    url, root = "http://10.0.0.11:3003/webhook/hubspot?a=1", "http://10.0.0.11:3003/"
    assert public_request_url(url, root, None) == url
    assert (
        public_request_url(url, root, "https://hooks.example.com/base")
        == "https://hooks.example.com/base/webhook/hubspot?a=1"
    )


def test_defaults_trust_no_proxy_and_keep_the_request_url(tmp_path: Path) -> None:
    loaded = settings(tmp_path)
    assert loaded.trusted_proxies == () and loaded.public_url is None


def test_proxy_settings_are_parsed(tmp_path: Path) -> None:
    loaded = settings(
        tmp_path,
        HOOKSYNC_TRUSTED_PROXIES=" 10.0.0.5, 10.1.0.0/16 ,::1",
        HOOKSYNC_PUBLIC_URL="https://hooks.example.com/",
    )
    assert [str(n) for n in loaded.trusted_proxies] == ["10.0.0.5/32", "10.1.0.0/16", "::1/128"]
    assert loaded.public_url == "https://hooks.example.com"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("HOOKSYNC_TRUSTED_PROXIES", "10.0.0.5,proxy.internal", "got 'proxy.internal'"),
        ("HOOKSYNC_TRUSTED_PROXIES", "10.0.0.0/33", "got '10.0.0.0/33'"),
        ("HOOKSYNC_PUBLIC_URL", "hooks.example.com", "got 'hooks.example.com'"),
        ("HOOKSYNC_PUBLIC_URL", "https://hooks.example.com/?a=1", "without credentials, query"),
    ],
)
def test_bad_proxy_settings_name_the_variable_and_value(
    tmp_path: Path, name: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=name) as caught:
        settings(tmp_path, **{name: value})
    assert message in str(caught.value)
