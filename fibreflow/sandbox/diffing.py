"""The change of an attempt as one unified git diff (new files and binary files included).

Only the paths that may have changed are staged, the original under ``a/`` and the sandbox's
version under ``b/``, and one ``git diff --no-index`` compares them: the cost follows the
size of the change, not of the repository.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

from fibreflow.errors import SandboxError
from fibreflow.sandbox.layers import EXCLUDED_TOP, LayerView, is_hidden, lower_entry

Ignored = Callable[[list[str]], set[str]]
_GIT_ENV = {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "LC_ALL": "C",
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": "/nonexistent"}


def _stage(src: Path, st: os.stat_result, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(src), dst)
    elif stat.S_ISREG(st.st_mode):
        try:
            os.link(src, dst, follow_symlinks=False)
        except OSError:  # another filesystem
            shutil.copy2(src, dst, follow_symlinks=False)
    # fifos, sockets and devices have no content to diff


def _fix_header(line: str) -> str:
    # staged as a/P and b/P with empty prefixes, git prints "a/P a/P" for a deleted file and
    # "b/P b/P" for a new one; both tokens have the same length, so split in the middle
    body = line.rstrip("\n")
    eol = line[len(body):]
    rest = body[len("diff --git "):]
    n = (len(rest) - 1) // 2
    left, sep, right = rest[:n], rest[n:n + 1], rest[n + 1:]
    i = 1 if left.startswith('"') else 0
    if sep != " " or left[:i] + left[i + 1:] != right[:i] + right[i + 1:]:
        return line
    return f"diff --git {left[:i]}a{left[i + 1:]} {right[:i]}b{right[i + 1:]}{eol}"


def git_diff(pairs: Iterable[tuple[str, tuple[Path, os.stat_result] | None,
                                   tuple[Path, os.stat_result] | None]], scratch: Path) -> str:
    """Diff (path, original entry, new entry) triples; entries are (host path, lstat) or None."""
    if scratch.exists():
        shutil.rmtree(scratch)
    (scratch / "a").mkdir(parents=True)
    (scratch / "b").mkdir()
    try:
        staged = 0
        for rel, old, new in pairs:
            for side, entry in (("a", old), ("b", new)):
                if entry is not None and not stat.S_ISDIR(entry[1].st_mode):
                    _stage(entry[0], entry[1], scratch / side / rel)
                    staged += 1
        if not staged:
            return ""
        proc = subprocess.run(
            ["git", "diff", "--no-index", "--binary", "--no-color", "--no-renames", "--no-ext-diff",
             "--no-textconv", "--src-prefix=", "--dst-prefix=", "a", "b"],
            cwd=scratch, capture_output=True, env=_GIT_ENV)
        if proc.returncode not in (0, 1):
            raise SandboxError(f"git diff failed: {proc.stderr.decode(errors='replace').strip()}")
        text = proc.stdout.decode("utf-8", errors="replace")
        return "".join(_fix_header(line) if line.startswith("diff --git ") else line
                       for line in text.splitlines(keepends=True))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def diff_overlay(view: LayerView, scratch: Path, *, ignored: Ignored) -> str:
    """The diff of an overlay sandbox: its upper layer against the repository below.

    ``ignored`` tells which new (untracked) paths the workspace's .gitignore rules exclude.
    """
    assert view.lower is not None
    lower = view.lower
    changed = sorted(view.changed_paths())
    originals = {rel: lower_entry(lower, rel) for rel in changed}
    untracked = [rel for rel, entry in originals.items() if entry is None]
    skip = ignored(untracked) if untracked else set()
    pairs = []
    for rel in changed:
        if rel in skip:
            continue
        pairs.append((rel, originals[rel], view.lookup(rel.split("/"))))
    return git_diff(pairs, scratch)


def _tree(root: Path, hidden: tuple[str, ...]) -> dict[str, os.stat_result]:
    found: dict[str, os.stat_result] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d not in EXCLUDED_TOP]
            filenames = [f for f in filenames if f not in EXCLUDED_TOP]
        if hidden:
            dirnames[:] = [d for d in dirnames if not is_hidden(os.path.normpath(os.path.join(rel_dir, d)), hidden)]
            filenames = [f for f in filenames if not is_hidden(os.path.normpath(os.path.join(rel_dir, f)), hidden)]
        for name in [*filenames, *[d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]]:
            rel = os.path.normpath(os.path.join(rel_dir, name))
            found[rel] = os.lstat(os.path.join(dirpath, name))
    return found


def diff_copy(base: Path, work: Path, scratch: Path, *, ignored: Ignored, hidden: tuple[str, ...] = ()) -> str:
    """The diff of a copy-mode sandbox: compares the whole copy with the repository (``hidden``
    paths, never copied, left out on both sides)."""
    old, new = _tree(base, hidden), _tree(work, hidden)
    changed = []
    for rel in sorted(old.keys() | new.keys()):
        a, b = old.get(rel), new.get(rel)
        if a is not None and b is not None and stat.S_IFMT(a.st_mode) == stat.S_IFMT(b.st_mode) \
                and a.st_mode == b.st_mode:
            if stat.S_ISLNK(a.st_mode):
                if os.readlink(base / rel) == os.readlink(work / rel):
                    continue
            elif filecmp.cmp(base / rel, work / rel, shallow=False):
                continue
        changed.append(rel)
    untracked = [rel for rel in changed if rel not in old]
    skip = ignored(untracked) if untracked else set()
    return git_diff(((rel, (base / rel, old[rel]) if rel in old else None,
                      (work / rel, new[rel]) if rel in new else None)
                     for rel in changed if rel not in skip), scratch)
