"""Isolated sandboxes for agent attempts: the protocol, profiles, backends and the manager.

Light imports only: backends and the manager load their dependencies when first used.
"""

from __future__ import annotations

from typing import Any

from fibreflow.sandbox.backends import BACKENDS, get_backend
from fibreflow.sandbox.base import CommandResult, Sandbox, SandboxBackend, SandboxProfile
from fibreflow.sandbox.profiles import PROFILES, load_profile

__all__ = [
    "BACKENDS",
    "PROFILES",
    "CommandResult",
    "Sandbox",
    "SandboxBackend",
    "SandboxManager",
    "SandboxProfile",
    "SandboxResults",
    "get_backend",
    "load_profile",
]


def __getattr__(name: str) -> Any:
    if name in ("SandboxManager", "SandboxResults"):  # imports the store (duckdb, pandas)
        from fibreflow.sandbox import manager

        return getattr(manager, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
