"""Git repositories for tests: a ``git`` runner with a fixed identity, ``make_repo`` and the
demo repository with its one-feature list (``demo_repo_and_features``)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

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


def write_demo_features(tmp_path: Path, **extra: object) -> Path:
    """``tmp_path/features.json``: the demo feature, with ``extra`` fields."""
    from fibreflow.models.scripts import DEMO_FEATURE

    features = tmp_path / "features.json"
    features.write_text(json.dumps([{**DEMO_FEATURE, **extra}], indent=1))
    return features


def demo_repo_and_features(tmp_path: Path, **extra: object) -> tuple[Path, Path]:
    """The demo repository (``tmp_path/demo``) and its one-feature list."""
    from fibreflow.models.scripts import write_demo_repo

    return write_demo_repo(tmp_path / "demo"), write_demo_features(tmp_path, **extra)
