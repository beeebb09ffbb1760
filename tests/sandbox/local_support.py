"""Helpers for the local-backend tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import dataclasses

from fibreflow.sandbox.base import SandboxProfile
from fibreflow.sandbox.profiles import load_profile
from fibreflow.sandbox.state import processes_with_argument as processes_with

__all__ = ["processes_with", "tight"]


def tight(**changes: object) -> SandboxProfile:
    """The ``quick`` profile with small limits, so limit tests finish fast."""
    base = dataclasses.replace(load_profile("quick"), wall_timeout_s=20, memory_mb=128, max_processes=64,
                               max_file_size_mb=1, cpu_time_s=20, disk_mb=64)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]
