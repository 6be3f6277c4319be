"""A module the install lacks stops `hooksync web|worker|beat|migrate` with one line naming it.

Each case runs the real command in a subprocess with one top-level module made unimportable
by a finder placed first on ``sys.meta_path``: Python then fails exactly as when the package
is not installed, the way a ``pip install`` without ``celery[redis]`` lacked ``packaging``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hooksync.cli import STARTUP_IMPORTS, check_imports
from tests.support.paths import REPO

RUN_WITHOUT = """
import sys

class Uninstalled:
    def find_spec(self, name, path=None, target=None):
        if name == sys.argv[1]:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Uninstalled())
from hooksync.cli import main
sys.exit(main(sys.argv[2:]))
"""


def run_without(tmp_path: Path, module: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOOKSYNC_")}
    env["HOOKSYNC_VAR_DIR"] = str(tmp_path / "var")
    return subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT, module, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("process", ["web", "worker", "beat"])
def test_a_missing_transport_dependency_is_named_not_blamed_on_redis(
    tmp_path: Path, process: str
) -> None:
    result = run_without(tmp_path, "packaging", process)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line, no traceback
    assert result.stderr.startswith(
        f"hooksync {process}: cannot load Celery's Redis transport (kombu.transport.redis): "
        "module 'packaging' is not installed (an incomplete installation, not a Redis "
        "connection problem); reinstall hooksync with its dependencies"
    ), result.stderr
    assert "celery[redis]" in result.stderr
    assert "is Redis running" not in result.stderr
    # Nothing was started or contacted: the check runs before the embedded Redis.
    assert not (tmp_path / "var" / "redis").exists()


@pytest.mark.parametrize(
    ("process", "module", "what"),
    [
        ("web", "redis", "the Redis client (redis)"),
        ("web", "flask", "the web application (ingress.app)"),
        ("worker", "celery", "the Celery application (hooksync.tasks)"),
        ("worker", "prometheus_client", "the metrics client (prometheus_client)"),
        ("beat", "celery", "the Celery application (hooksync.tasks)"),
    ],
)
def test_any_missing_module_names_what_could_not_load(
    tmp_path: Path, process: str, module: str, what: str
) -> None:
    result = run_without(tmp_path, module, process)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == (
        f"hooksync {process}: cannot load {what}: module {module!r} is not installed (an "
        "incomplete installation); reinstall hooksync with its dependencies: pip install "
        "<hooksync wheel or source folder>\n"
    )


def test_migrate_names_a_missing_module(tmp_path: Path) -> None:
    result = run_without(tmp_path, "alembic", "migrate")
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr == (
        "hooksync migrate: module 'alembic' is not installed (an incomplete installation); "
        "reinstall hooksync with its dependencies: pip install <hooksync wheel or source "
        "folder>\n"
    )


@pytest.mark.parametrize("process", sorted(STARTUP_IMPORTS))
def test_the_complete_install_passes_the_check(process: str) -> None:
    check_imports(process)  # every listed module exists and imports
