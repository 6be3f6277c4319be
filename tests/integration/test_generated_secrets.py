"""Secrets left unset are generated once into var/secrets.json and shared by every process."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from config.settings import load_settings


def test_processes_starting_together_agree_on_generated_secrets(tmp_path: Path) -> None:
    env = {"HOOKSYNC_VAR_DIR": str(tmp_path / "var")}
    with ThreadPoolExecutor(8) as pool:
        loaded = list(pool.map(lambda _: load_settings(env), range(8)))
    assert len({(s.secret_key, s.webhook_signing_key, s.encryption_key) for s in loaded}) == 1
    secrets_file = tmp_path / "var" / "secrets.json"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert load_settings(env).secret_key == loaded[0].secret_key


def test_a_variable_wins_over_the_generated_secret(tmp_path: Path) -> None:
    env = {"HOOKSYNC_VAR_DIR": str(tmp_path / "var")}
    generated = load_settings(env)
    given = load_settings({**env, "HOOKSYNC_SECRET_KEY": "from-env"})
    assert given.secret_key == "from-env"
    assert given.webhook_signing_key == generated.webhook_signing_key
