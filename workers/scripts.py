"""Load sync scripts from ``integrations/<integration>/syncs/<sync>.py``.

A script is imported from its file (it need not be on ``sys.path``) and cached by path,
modification time and size, so an edited script is picked up by the next run without
restarting the worker.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from config.errors import FatalError

__all__ = ["load_function", "load_script", "script_path"]

#: Integration and sync names become path parts: no separators, no "..".
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

_cache: dict[Path, tuple[tuple[int, int], ModuleType]] = {}
_cache_lock = threading.Lock()


def script_path(integrations_dir: Path, integration: str, sync: str) -> Path:
    """The file a sync's script lives in.

    Raises:
        FatalError: If a name could escape the integrations folder.
    """
    for label, name in (("integration", integration), ("sync", sync)):
        if not _SAFE_NAME.match(name) or ".." in name:
            raise FatalError(f"{label} name {name!r} cannot name a script file")
    return Path(integrations_dir) / integration / "syncs" / f"{sync}.py"


def load_script(integrations_dir: Path, integration: str, sync: str) -> ModuleType:
    """Import (or reuse) the script module of ``integration``'s sync ``sync``.

    Raises:
        FatalError: The file is missing or raises while being imported.
    """
    path = script_path(integrations_dir, integration, sync)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise FatalError(
            f"sync script {str(path)!r} not found: sync {sync!r} of integration "
            f"{integration!r} needs this file"
        ) from None
    version = (stat.st_mtime_ns, stat.st_size)
    with _cache_lock:
        cached = _cache.get(path)
        if cached is not None and cached[0] == version:
            return cached[1]
        module = _import(path, integration, sync)
        _cache[path] = (version, module)
        return module


def load_function(
    integrations_dir: Path, integration: str, sync: str, function: str
) -> Callable[..., Any]:
    """The function ``function`` of a sync script.

    Raises:
        FatalError: The file is missing, fails to import, or does not define the function.
    """
    module = load_script(integrations_dir, integration, sync)
    found = getattr(module, function, None)
    if not callable(found):
        path = script_path(integrations_dir, integration, sync)
        raise FatalError(
            f"sync script {str(path)!r} does not define {function}(); "
            f"add `def {function}(nango{', payload' if 'webhook' in function else ''}):`"
        )
    return found  # type: ignore[no-any-return]


def _import(path: Path, integration: str, sync: str) -> ModuleType:
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:8]
    name = "_".join(("hooksync_script", _identifier(integration), _identifier(sync), digest))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FatalError(f"sync script {str(path)!r} cannot be imported")
    module = importlib.util.module_from_spec(spec)
    # Registered before running it: dataclasses and pickling look modules up by name.
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        sys.modules.pop(name, None)
        raise FatalError(
            f"sync script {str(path)!r} failed to import: {type(error).__name__}: {error}"
        ) from error
    return module


def _identifier(name: str) -> str:
    return re.sub(r"\W", "_", name)
