"""A repository as one gzip tar archive, for backends that upload it (one request, not thousands).

The files are what git would commit: tracked files plus untracked ones not ignored, never
``.git`` itself or a virtualenv, nor what the caller excludes (the store, the state directory).
A directory that is not a git repository is walked instead, skipping the usual build and
environment directories.
"""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from collections.abc import Iterable
from pathlib import Path

from fibreflow.errors import SandboxError
from fibreflow.sandbox.layers import hidden_within, is_hidden

SKIP_DIRS = frozenset({".git", ".venv", "venv", "__pycache__", "node_modules", ".mypy_cache",
                       ".pytest_cache", ".ruff_cache", ".tox"})


def repo_files(repo: Path, *, exclude: Iterable[Path] = ()) -> list[str]:
    """Repository-relative paths to upload, sorted; nothing at or below an ``exclude`` path."""
    if not repo.is_dir():
        raise SandboxError(f"repository {repo} is not a directory")
    hidden = hidden_within(repo, exclude)
    if (repo / ".git").exists():
        try:
            out = subprocess.run(
                ["git", "-C", str(repo), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                capture_output=True, check=True, timeout=120).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise SandboxError(f"cannot list the files of {repo} with git: {exc}") from exc
        names = {n for n in out.decode("utf-8", "surrogateescape").split("\0") if n}
        return sorted(n for n in names if not set(Path(n).parts[:-1]) & SKIP_DIRS
                      and not is_hidden(n, hidden) and os.path.lexists(repo / n))
    found = []
    for root, dirs, files in os.walk(repo):
        rel = Path(root).relative_to(repo)
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not is_hidden((rel / d).as_posix(), hidden))
        found += [str(rel / f) if str(rel) != "." else f for f in files]
    return sorted(f for f in found if not is_hidden(f, hidden))


def repo_archive(repo: Path, *, exclude: Iterable[Path] = ()) -> bytes:
    """The repository's files as ``tar.gz`` bytes (symlinks stay symlinks), ``exclude`` left out."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for name in repo_files(repo, exclude=exclude):
            info = tar.gettarinfo(str(repo / name), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                with open(repo / name, "rb") as fh:
                    tar.addfile(info, fh)
            elif info.issym():
                tar.addfile(info)
    return buf.getvalue()
