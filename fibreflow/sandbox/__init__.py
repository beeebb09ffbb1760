"""Isolated sandboxes for agent attempts: the protocol, profiles, backends and the manager.

Light imports only: backends and the manager load their dependencies when first used.

Modules:

- ``base``: the ``Sandbox`` and ``SandboxBackend`` protocols and their records.
- ``backends``: backends by name (``local``, ``e2b``); ``profiles`` (+ ``profiles.yaml``): limit sets.
- ``local``: bubblewrap over a copy-on-write overlay, with ``isolation`` (what this host allows),
  ``launch`` (one command), ``layers`` (the workspace on disk), ``cgroups`` (limits),
  ``state`` (the registry and the reaper), ``disk`` (the size-limited tmpfs an attempt writes to)
  and ``diffing`` (the attempt's diff).
- ``e2b``: E2B sandboxes (E2B's cloud or your own hosts); ``repo_archive``: the repository as one upload.
- ``e2b_server``: ``fibreflow sandbox serve``, the E2B protocol over this host's local sandboxes, with
  ``e2b_pool`` (the served sandboxes' lifecycle), ``e2b_envd`` (commands and files inside one) and
  ``e2b_launch`` (the server as a child process, for benchmarks and tests).
- ``manager``: ``SandboxManager``, create -> execute -> extract results -> clean up, each session recorded.
- ``records``: ``sandbox_sessions`` rows and the ``SessionWriter`` the manager hands them to
  (the table's only writer).
- ``results``: the test command that writes JUnit XML and coverage, and their parsers.
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
