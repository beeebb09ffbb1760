"""Helpers for the local-backend tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import dataclasses
import os

from fibreflow.sandbox.base import SandboxProfile
from fibreflow.sandbox.profiles import load_profile


def tight(**changes: object) -> SandboxProfile:
    """The ``quick`` profile with small limits, so limit tests finish fast."""
    base = dataclasses.replace(load_profile("quick"), wall_timeout_s=20, memory_mb=128, max_processes=64,
                               max_file_size_mb=1, cpu_time_s=20, disk_mb=64)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def processes_with(marker: str, *, argv0: bool = False) -> list[int]:
    """Host processes whose command line (``argv0``: whose first argument) contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
                if marker.encode() in (cmdline.split(b"\0")[0] if argv0 else cmdline):
                    found.append(int(entry))
        except OSError:
            continue
    return found
