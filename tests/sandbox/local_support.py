"""Helpers for the local-backend tests (the fixtures are in conftest.py)."""

from __future__ import annotations

import dataclasses
import os
import subprocess
from pathlib import Path

from fibreflow.sandbox.base import SandboxProfile
from fibreflow.sandbox.profiles import load_profile

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
           "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}


def git(repo: Path, *args: str, input: bytes | None = None) -> str:
    """Run git in ``repo`` and return its stdout (fails the test on error)."""
    proc = subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, input=input, capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout.decode()


def make_repo(path: Path, files: dict[str, str | bytes]) -> Path:
    """A git repository at ``path`` with ``files`` committed."""
    path.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)
    git(path, "init", "-q", "-b", "main")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial")
    return path


def tight(**changes: object) -> SandboxProfile:
    """The ``quick`` profile with small limits, so limit tests finish fast."""
    base = dataclasses.replace(load_profile("quick"), wall_timeout_s=20, memory_mb=128, max_processes=64,
                               max_file_size_mb=1, cpu_time_s=20)
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def processes_with(marker: str) -> list[int]:
    """Host processes whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if marker.encode() in fh.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found
