"""The git side of the autopilot, all without touching the user's working tree, index or branch.

Attempts build on an export of a commit (``git archive`` into a temporary directory, made a
fresh repository of its own so ``.gitignore`` rules still apply in the sandboxes). A winner is
committed with plumbing: its diff is applied to a temporary index (``GIT_INDEX_FILE``) read
from the parent commit, ``write-tree`` and ``commit-tree`` make the commit, and ``update-ref``
creates the new branch only if it does not exist yet. The checked-out branch, the index and
the files of the working tree are never written.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from fibreflow.build.stacking import EXCLUDES, apply_diff, init_tree
from fibreflow.errors import AutopilotError, ConfigError

AUTHOR = {"GIT_AUTHOR_NAME": "fibreflow autopilot", "GIT_AUTHOR_EMAIL": "autopilot@fibreflow.invalid",
          "GIT_COMMITTER_NAME": "fibreflow autopilot", "GIT_COMMITTER_EMAIL": "autopilot@fibreflow.invalid"}
ZERO = "0" * 40


@dataclass(frozen=True)
class DiffStats:
    """What a commit range changed."""

    files: int
    insertions: int
    deletions: int
    paths: tuple[str, ...]

    def to_dict(self) -> dict[str, object]:
        return {"files": self.files, "insertions": self.insertions, "deletions": self.deletions,
                "paths": list(self.paths)}

    def short(self) -> str:
        """``2 files, +10 -3``."""
        return f"{self.files} file{'s' if self.files != 1 else ''}, +{self.insertions} -{self.deletions}"


def git(repo: str | Path, *args: str, input: bytes | str | None = None,  # noqa: A002 - subprocess's name
        env: Mapping[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``git -C repo ARGS``; a failure raises AutopilotError with git's message."""
    full_env = {**os.environ, "LC_ALL": "C", **(env or {})}
    data = input.encode() if isinstance(input, str) else input
    proc = subprocess.run(["git", "-C", str(repo), *args], input=data, capture_output=True, env=full_env,
                          timeout=300)
    out = subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode("utf-8", "replace"),
                                      proc.stderr.decode("utf-8", "replace"))
    if check and proc.returncode != 0:
        raise AutopilotError(f"git {args[0]} failed in {repo}: {out.stderr.strip() or out.stdout.strip()}")
    return out


def repo_root(path: str | Path) -> Path:
    """The top directory of the git repository at ``path``, which must have a commit."""
    p = Path(path).expanduser().resolve()
    if not p.is_dir():
        raise ConfigError("the repository is not a directory", path=str(p))
    found = git(p, "rev-parse", "--show-toplevel", check=False)
    if found.returncode != 0:
        raise ConfigError("not a git repository: the autopilot commits winners to a new branch of one "
                          "(run `git init` and commit first)", path=str(p))
    root = Path(found.stdout.strip())
    if git(root, "rev-parse", "--verify", "-q", "HEAD^{commit}", check=False).returncode != 0:
        raise ConfigError("the repository has no commit yet; commit once so branches have a base", path=str(root))
    return root


def head(repo: Path) -> tuple[str | None, str]:
    """(the checked-out branch or None when detached, the HEAD commit)."""
    ref = git(repo, "symbolic-ref", "-q", "--short", "HEAD", check=False).stdout.strip() or None
    return ref, git(repo, "rev-parse", "--verify", "HEAD^{commit}").stdout.strip()


def dirty_paths(repo: Path) -> list[str]:
    """Tracked files with uncommitted changes (they are not part of a build from HEAD)."""
    out = git(repo, "status", "--porcelain", "--untracked-files=no").stdout
    return [line[3:] for line in out.splitlines() if line.strip()]


def branch_name(prefix: str, run_id: str, feature_id: str) -> str:
    """``<prefix>/<run>/<feature>``, checked by ``git check-ref-format``."""
    name = f"{prefix.strip('/')}/{run_id}/{feature_id}"
    ok = subprocess.run(["git", "check-ref-format", f"refs/heads/{name}"], capture_output=True).returncode == 0
    if not ok:
        raise AutopilotError(f"{name!r} is not a valid branch name (check autopilot.branch_prefix and the feature id)")
    return name


def export_commit(repo: Path, commit: str, dest: Path) -> Path:
    """The files of ``commit`` under ``dest``, as a fresh repository of their own."""
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit],
                             capture_output=True, timeout=300)
    if archive.returncode != 0:
        raise AutopilotError(f"git archive {commit} failed: {archive.stderr.decode(errors='replace').strip()}")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="tar")  # the user's own commit: symlinks kept as they are
    return init_tree(dest)  # as a plain build's stacked trees (build.stacking)


@contextlib.contextmanager
def checkout(repo: Path, commit: str, *, label: str = "checkout") -> Iterator[Path]:
    """A temporary export of ``commit`` (see :func:`export_commit`), removed afterwards."""
    tmp = Path(tempfile.mkdtemp(prefix=f"fibreflow-{label}-"))
    try:
        yield export_commit(repo, commit, tmp / "repo")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def commit_diff(repo: Path, parent: str, diff: str, message: str, *, date: str | None = None) -> str:
    """A new commit: ``parent`` with ``diff`` applied, made through a temporary index. With the same
    ``date`` (git's ``"<epoch> +0000"``) the same inputs give the same commit."""
    with tempfile.TemporaryDirectory(prefix="fibreflow-index-") as tmp:
        env = {**AUTHOR, "GIT_INDEX_FILE": str(Path(tmp) / "index")}
        if date is not None:
            env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
        git(repo, "read-tree", parent, env=env)
        failed = apply_diff(repo, diff, cached=True, env=env)  # one way to stack a winner (build.stacking)
        if failed is not None:
            raise AutopilotError(f"the winner's diff does not apply to {parent[:12]}: {failed}")
        tree = git(repo, "write-tree", env=env).stdout.strip()
        return git(repo, "commit-tree", tree, "-p", parent, "-F", "-", input=message, env=env).stdout.strip()


def create_branch(repo: Path, name: str, commit: str) -> None:
    """Create branch ``name`` at ``commit``; fails if it exists at another commit (never moves one)."""
    ref = f"refs/heads/{name}"
    existing = git(repo, "rev-parse", "--verify", "-q", ref, check=False).stdout.strip()
    if existing == commit:
        return  # a resumed run made it already
    if existing:
        raise AutopilotError(f"branch {name} already exists at {existing[:12]}; the autopilot never moves a branch")
    git(repo, "update-ref", "-m", "fibreflow autopilot", ref, commit, ZERO)


def diff_stats(repo: Path, base: str, commit: str) -> DiffStats:
    """Files, insertions and deletions between two commits (binary files count as changed)."""
    out = git(repo, "diff", "--numstat", "--no-renames", base, commit).stdout
    files = ins = dels = 0
    paths = []
    for line in out.splitlines():
        added, removed, path = line.split("\t", 2)
        files += 1
        ins += int(added) if added.isdigit() else 0
        dels += int(removed) if removed.isdigit() else 0
        paths.append(path)
    return DiffStats(files, ins, dels, tuple(paths))


__all__ = ["EXCLUDES", "DiffStats", "branch_name", "checkout", "commit_diff", "create_branch", "diff_stats", "dirty_paths",
           "export_commit", "git", "head", "repo_root"]
