"""Sandbox backends by name: ``local`` (bubblewrap + overlay) and ``e2b`` (E2B cloud)."""

from __future__ import annotations

import importlib
from typing import Any

from fibreflow.errors import SandboxError, SandboxUnavailable
from fibreflow.sandbox.base import SandboxBackend

_FACTORIES = {
    "local": "fibreflow.sandbox.local:LocalBackend",
    "e2b": "fibreflow.sandbox.e2b:E2BBackend",
}
BACKENDS: tuple[str, ...] = tuple(_FACTORIES)
"""Names of the known backends."""


def get_backend(name: str, **kwargs: Any) -> SandboxBackend:
    """A backend instance by name; keyword arguments go to its constructor.

    An unknown name raises SandboxError listing the known ones; a backend whose module is
    missing raises SandboxUnavailable.
    """
    target = _FACTORIES.get(name)
    if target is None:
        raise SandboxError(f"unknown sandbox backend '{name}' (known: {', '.join(BACKENDS)})")
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise SandboxUnavailable(f"sandbox backend '{name}' is not part of this build") from exc
    return getattr(module, attr)(**kwargs)


__all__ = ["BACKENDS", "get_backend"]
