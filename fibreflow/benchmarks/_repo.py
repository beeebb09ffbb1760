"""A one-file git repository for the benchmarks whose attempts need a repository but not its content."""

from __future__ import annotations

import subprocess
from pathlib import Path


def bench_repo(root: Path) -> Path:
    """``root/repo``: a git repository with one committed README."""
    repo = root / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("benchmark repository\n")
    for cmd in (["init", "-q"], ["add", "-A"],
                ["-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "init"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True, capture_output=True)
    return repo
