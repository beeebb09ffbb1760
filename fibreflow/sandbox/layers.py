"""A sandbox workspace as layers on disk: read, write and diff it from the host, safely.

The local backend keeps what an attempt changed in an overlayfs upper directory over the
repository (the read-only lower layer). Between commands nothing is mounted and nothing in
the sandbox runs, so the host reads and writes the merged view here, following overlayfs's
on-disk rules (a 0/0 character device is a deletion, an "opaque" directory hides the lower one).
Paths are resolved the way the sandbox sees them: symlinks are followed inside the workspace
only, ``..`` never climbs above it, so no path handed to the sandbox API can reach the host.
In copy mode the workspace is a plain copy: the same code with no lower layer.
"""

from __future__ import annotations

import os
import stat
from collections import deque
from collections.abc import Iterable
from pathlib import Path

from fibreflow.errors import SandboxError

WORKSPACE = "/workspace"
OPAQUE_XATTR = "trusted.overlay.opaque"
# never part of an attempt's change: git's own data and fibreflow's artefacts (JUnit, coverage)
EXCLUDED_TOP = frozenset({".git", ".fibreflow"})
_MAX_SYMLINKS = 40


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None


def is_whiteout(st: os.stat_result) -> bool:
    """Whether an upper-layer entry records a deletion."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def is_opaque(path: Path) -> bool:
    """Whether an upper-layer directory hides the lower directory of the same name."""
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def split_path(path: str) -> list[str]:
    """The components of a sandbox path, relative to the workspace (``/workspace/x`` or ``x``)."""
    if "\0" in path:
        raise SandboxError(f"{path!r}: NUL in path")
    if path == WORKSPACE or path.startswith(WORKSPACE + "/"):
        path = path[len(WORKSPACE):]
    elif path.startswith("/"):
        raise SandboxError(f"{path}: outside the workspace ({WORKSPACE})")
    return [c for c in path.split("/") if c not in ("", ".")]


def is_hidden(rel: str, hidden: tuple[str, ...]) -> bool:
    """Whether the workspace path ``rel`` is one of ``hidden`` or lies below one."""
    return any(rel == h or rel.startswith(h + "/") for h in hidden)


def hidden_within(repo: Path, paths: Iterable[str | Path]) -> tuple[str, ...]:
    """The ``paths`` that lie inside ``repo`` (the repository itself excepted), as workspace paths,
    sorted; one below another is left out, being hidden with it."""
    base = repo.resolve()
    inside = sorted({p.relative_to(base).as_posix() for p in (Path(x).expanduser().resolve() for x in paths)
                     if p != base and p.is_relative_to(base)})
    return tuple(rel for rel in inside if not any(is_hidden(rel, (other,)) for other in inside if other != rel))


class LayerView:
    """The merged view of ``upper`` over ``lower`` (``lower=None``: upper alone).

    ``hidden`` paths (relative to the workspace: the store, the state directory, ...) are never
    part of what changed: they are masked from the sandbox (``hide``), and whatever the attempt
    puts in their place is its own and stays out of the diff.
    """

    def __init__(self, upper: Path, lower: Path | None = None, *, hidden: tuple[str, ...] = ()) -> None:
        self.upper = upper
        self.lower = lower
        self.hidden = hidden

    # -- lookup ----------------------------------------------------------------------------

    def lookup(self, parts: list[str]) -> tuple[Path, os.stat_result] | None:
        """The host path and lstat of the view's entry at ``parts`` (no symlink followed)."""
        if not parts:
            return self.upper, os.lstat(self.upper)
        upath: Path | None = self.upper
        lpath: Path | None = self.lower
        for i, comp in enumerate(parts):
            last = i == len(parts) - 1
            ust = None
            if upath is not None:
                upath = upath / comp
                ust = _lstat(upath)
                if ust is None:
                    upath = None
            lst = None
            if lpath is not None:
                lpath = lpath / comp
                lst = _lstat(lpath)
                if lst is None:
                    lpath = None
            if upath is not None and ust is not None:  # a stat is only taken of a path
                if is_whiteout(ust):
                    return None
                if last:
                    return upath, ust
                if not stat.S_ISDIR(ust.st_mode):
                    return None
                if is_opaque(upath) or (lst is not None and not stat.S_ISDIR(lst.st_mode)):
                    lpath = None
                continue
            if lpath is None or lst is None:
                return None
            if last:
                return lpath, lst
            if not stat.S_ISDIR(lst.st_mode):
                return None
            upath = None  # the upper has no directory here, so nothing deeper either
        return None

    def resolve(self, path: str, *, for_write: bool = False) -> list[str]:
        """Resolve ``path`` like the sandbox would, symlinks included, never leaving the workspace.

        For writing, missing parent directories are allowed (they will be created).
        """
        todo = deque(split_path(path))
        resolved: list[str] = []
        missing = False
        hops = 0
        while todo:
            comp = todo.popleft()
            if comp in ("", "."):
                continue
            if comp == "..":
                if not resolved:
                    raise SandboxError(f"{path}: escapes the workspace")
                resolved.pop()
                continue
            candidate = [*resolved, comp]
            entry = None if missing else self.lookup(candidate)
            if entry is None:
                if todo and not for_write:
                    raise FileNotFoundError(f"{path}: no such file in the sandbox")
                missing = True
                resolved = candidate
                continue
            host, st = entry
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_SYMLINKS:
                    raise SandboxError(f"{path}: too many levels of symbolic links")
                target = os.readlink(host)
                if target.startswith("/"):
                    if not (target == WORKSPACE or target.startswith(WORKSPACE + "/")):
                        raise SandboxError(f"{path}: symlink to {target} points outside the workspace")
                    resolved = []
                    target = target[len(WORKSPACE):]
                todo.extendleft(reversed(target.split("/")))
                continue
            if todo and not stat.S_ISDIR(st.st_mode):
                raise SandboxError(f"{path}: {'/'.join(candidate)} is not a directory")
            resolved = candidate
        return resolved

    # -- read and write --------------------------------------------------------------------

    def read_bytes(self, path: str) -> bytes:
        """The content of the file at ``path``."""
        parts = self.resolve(path)
        entry = self.lookup(parts)
        if entry is None:
            raise FileNotFoundError(f"{path}: no such file in the sandbox")
        host, st = entry
        if not stat.S_ISREG(st.st_mode):
            raise SandboxError(f"{path}: not a regular file")
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as fh:
            return fh.read()

    def _ensure_dirs(self, parts: list[str]) -> None:
        for i in range(1, len(parts) + 1):
            up = self.upper.joinpath(*parts[:i])
            st = _lstat(up)
            if st is not None and stat.S_ISDIR(st.st_mode):
                continue
            if st is not None and not is_whiteout(st):
                raise SandboxError(f"{'/'.join(parts[:i])} is not a directory")
            below = self.lookup(parts[:i])  # a lower directory keeps its mode
            mode = stat.S_IMODE(below[1].st_mode) if below and stat.S_ISDIR(below[1].st_mode) else 0o755
            if st is not None:  # re-creating a deleted directory: it must hide the old one
                os.unlink(up)
                os.mkdir(up, mode)
                os.setxattr(up, OPAQUE_XATTR, b"y", follow_symlinks=False)
            else:
                os.mkdir(up, mode)

    def write_bytes(self, path: str, data: bytes) -> None:
        """Create or replace the file at ``path`` with ``data``."""
        parts = self.resolve(path, for_write=True)
        if not parts:
            raise SandboxError(f"{path}: is the workspace itself")
        self._ensure_dirs(parts[:-1])
        below = self.lookup(parts)
        if below is not None and stat.S_ISDIR(below[1].st_mode):
            raise SandboxError(f"{path}: is a directory")
        mode = stat.S_IMODE(below[1].st_mode) if below else 0o644
        host = self.upper.joinpath(*parts)
        st = _lstat(host)
        if st is not None and (is_whiteout(st) or stat.S_ISLNK(st.st_mode)):
            os.unlink(host)
        fd = os.open(host, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)

    def hide(self, rel: str) -> None:
        """Make ``rel`` absent from the view, whatever the lower layer holds there now or later:
        a whiteout in the upper layer (overlayfs never looks below one)."""
        parts = rel.split("/")
        self._ensure_dirs(parts[:-1])
        host = self.upper.joinpath(*parts)
        if _lstat(host) is None:
            os.mknod(host, stat.S_IFCHR, os.makedev(0, 0))

    def remove(self, path: str) -> None:
        """Delete a file this host side wrote into the upper layer (fibreflow's own artefacts)."""
        parts = self.resolve(path)
        host = self.upper.joinpath(*parts)
        st = _lstat(host)
        if st is not None and not stat.S_ISDIR(st.st_mode):
            os.unlink(host)

    # -- what changed ----------------------------------------------------------------------

    def _lower_files(self, parts: list[str]) -> list[str]:
        """Every non-directory entry of the lower layer at or below ``parts``."""
        if self.lower is None:
            return []
        host = self.lower.joinpath(*parts)
        if not _safe_lower_dir_chain(self.lower, parts[:-1]):
            return []
        st = _lstat(host)
        if st is None:
            return []
        if not stat.S_ISDIR(st.st_mode):
            return ["/".join(parts)]
        found: list[str] = []
        for dirpath, dirnames, filenames in os.walk(host):
            rel = os.path.relpath(dirpath, self.lower)
            dirnames[:] = [d for d in dirnames if not is_hidden(os.path.normpath(os.path.join(rel, d)), self.hidden)]
            found.extend(os.path.normpath(os.path.join(rel, f)) for f in filenames)
            for d in list(dirnames):
                if os.path.islink(os.path.join(dirpath, d)):
                    found.append(os.path.normpath(os.path.join(rel, d)))
                    dirnames.remove(d)
        return found

    def changed_paths(self) -> set[str]:
        """Paths (files, symlinks) that may differ between the lower layer and the view."""
        if self.lower is None:
            raise SandboxError("changed_paths needs a lower layer")
        changed: set[str] = set()
        stack: list[list[str]] = [[]]
        while stack:
            parts = stack.pop()
            with os.scandir(self.upper.joinpath(*parts)) as it:
                for entry in it:
                    if not parts and entry.name in EXCLUDED_TOP:
                        continue
                    child = [*parts, entry.name]
                    if self.hidden and is_hidden("/".join(child), self.hidden):
                        continue
                    st = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(st.st_mode):
                        if is_opaque(Path(entry.path)):
                            changed.update(self._lower_files(child))
                        else:
                            lower = self.lower.joinpath(*child)
                            lst = _lstat(lower)
                            if lst is not None and not stat.S_ISDIR(lst.st_mode):
                                changed.add("/".join(child))
                        stack.append(child)
                    else:
                        changed.update(self._lower_files(child))
                        if not is_whiteout(st):
                            changed.add("/".join(child))
        return {p for p in changed if not is_hidden(p, self.hidden)} if self.hidden else changed


def _safe_lower_dir_chain(root: Path, parts: list[str]) -> bool:
    """Whether every directory on the way to ``parts`` is a real directory (not a symlink)."""
    host = root
    for comp in parts:
        host = host / comp
        st = _lstat(host)
        if st is None or not stat.S_ISDIR(st.st_mode):
            return False
    return True


def lower_entry(root: Path, rel: str) -> tuple[Path, os.stat_result] | None:
    """The lower layer's own entry at ``rel``, reached through real directories only."""
    parts = rel.split("/")
    if not _safe_lower_dir_chain(root, parts[:-1]):
        return None
    host = root.joinpath(*parts)
    st = _lstat(host)
    return (host, st) if st is not None else None
