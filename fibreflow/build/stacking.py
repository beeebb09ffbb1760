"""Stacking winners: a feature's attempts start from the code of the features it builds on.

One piece of code for both kinds of build. The autopilot commits each winner on top of the one
before and exports that commit (``autopilot.gitrepo``); a plain ``fibreflow build`` writes no
commit, so a feature with dependencies works on a temporary tree: the repository's files with
the winning diffs of its dependencies (all of them, transitively, in dependency order) applied.
Both make their trees with ``init_tree`` (a fresh git repository of its own, so ``.gitignore``
rules still hold in the sandboxes) and apply winners with ``apply_diff`` (``git apply``, to the
files or, for a commit, to a temporary index).

``pick_winner`` is a plain build's choice among passing attempts (the autopilot's selection,
above this layer, chooses its own): most tests passed, then coverage, then cost, then order.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from fibreflow.build.attempt import AgentAttempt
from fibreflow.build.features import Feature, FeatureList

EXCLUDES = "__pycache__/\n*.py[cod]\n.pytest_cache/\n.coverage\n.coverage.*\n.mypy_cache/\n.ruff_cache/\n"
"""What tests and interpreters leave behind; a fresh tree has no ``.gitignore`` of the user's machine."""


def _git(tree: Path, *args: str, input: bytes | None = None,  # noqa: A002 - subprocess's name
         env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(tree), *args], input=input, capture_output=True, timeout=300,
                          env={**os.environ, "LC_ALL": "C", **(env or {})})


def init_tree(tree: Path) -> Path:
    """Make the files under ``tree`` a fresh git repository of their own (no commit)."""
    done = _git(tree, "init", "-q")
    if done.returncode != 0:
        raise OSError(f"git init failed in {tree}: {done.stderr.decode(errors='replace').strip()}")
    (tree / ".git" / "info").mkdir(parents=True, exist_ok=True)
    (tree / ".git" / "info" / "exclude").write_text(EXCLUDES)
    return tree


def apply_diff(tree: Path, diff: str, *, cached: bool = False, env: Mapping[str, str] | None = None) -> str | None:
    """Apply a winner's unified git diff to the files of ``tree`` (``cached``: to the index that
    ``env``'s ``GIT_INDEX_FILE`` names); None when it applied, else git's reason."""
    if not diff.strip():
        return None
    args = ["apply", *(["--cached"] if cached else []), "--binary", "--whitespace=nowarn", "-"]
    done = _git(tree, *args, input=diff.encode(), env=env)
    return None if done.returncode == 0 else (done.stderr.decode(errors="replace").strip() or "git apply failed")


def pick_winner(attempts: Iterable[AgentAttempt]) -> AgentAttempt | None:
    """A plain build's winner among the passing attempts: most tests passed, then the highest
    coverage, then the lowest cost, then the earliest; None when none passed."""
    passing = [a for a in attempts if a.passed]
    if not passing:
        return None
    order = {id(a): i for i, a in enumerate(passing)}
    return min(passing, key=lambda a: (-a.tests_passed, -(a.test_coverage or 0.0), a.cost_usd, order[id(a)]))


def dependency_chain(features: FeatureList, feature: Feature) -> list[Feature]:
    """Every feature ``feature`` depends on, directly or not, in dependency order."""
    needed: set[str] = set()
    todo = list(feature.dependencies)
    while todo:
        fid = todo.pop()
        if fid not in needed:
            needed.add(fid)
            todo.extend(features.get(fid).dependencies)
    return [f for f in features.ordered() if f.id in needed]


def _repo_files(repo: Path, hidden: Sequence[Path]) -> list[str]:
    """What a stacked tree copies: a git repository's tracked and unignored files, else every file;
    never ``.git`` nor the ``hidden`` paths (the store's files)."""
    listed = _git(repo, "ls-files", "-z", "-co", "--exclude-standard")  # relative to repo, also in a subfolder
    if listed.returncode == 0:
        names = [n for n in listed.stdout.decode(errors="surrogateescape").split("\0") if n]
    else:
        names = [p.relative_to(repo).as_posix() for p in repo.rglob("*")
                 if (p.is_file() or p.is_symlink()) and ".git" not in p.relative_to(repo).parts]
    hide = {h.resolve() for h in hidden}
    return [n for n in names if (repo / n).resolve() not in hide]


class StackError(Exception):
    """A dependency's winning diff does not apply on top of the ones before it."""


class StackedTrees:
    """Temporary trees of one plain build, one per feature whose dependencies changed code."""

    def __init__(self, repo: Path, *, hidden: Sequence[Path] = ()) -> None:
        self.repo = repo
        self.hidden = list(hidden)
        self._root: Path | None = None

    def tree_for(self, feature: Feature, chain: Sequence[tuple[str, str]]) -> Path:
        """The repository with ``chain``'s diffs (``(feature id, diff)`` in dependency order) applied;
        the repository itself when none changed anything. A diff that does not apply is a
        StackError naming its feature."""
        diffs = [(fid, d) for fid, d in chain if d.strip()]
        if not diffs:
            return self.repo
        if self._root is None:
            self._root = Path(tempfile.mkdtemp(prefix="fibreflow-stack-"))
        tree = self._root / feature.id
        for name in _repo_files(self.repo, self.hidden):
            src, dst = self.repo / name, tree / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_symlink():
                dst.symlink_to(os.readlink(src))
            elif src.is_file():
                shutil.copy2(src, dst)
        tree.mkdir(parents=True, exist_ok=True)
        init_tree(tree)
        for fid, diff in diffs:
            failed = apply_diff(tree, diff)
            if failed is not None:
                raise StackError(f"the winning code of dependency {fid!r} does not apply on top of "
                                 f"{', '.join(repr(f) for f, _ in diffs[:diffs.index((fid, diff))]) or 'the repository'}: "
                                 f"{failed}")
        return tree

    def close(self) -> None:
        """Remove every tree made."""
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)
            self._root = None


__all__ = ["EXCLUDES", "StackError", "StackedTrees", "apply_diff", "dependency_chain", "init_tree", "pick_winner"]
