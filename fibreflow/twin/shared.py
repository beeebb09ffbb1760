"""Reads shared by every dashboard kernel on the host: one store read per change, not one per viewer.

Voila runs one kernel per open dashboard, and every kernel polls the same store. When a row is
written, each of them would read the change token and reload the panel on screen: ten viewers,
ten reads holding the store's lock while a writer waits. ``SharedReads`` keeps the result of a
read in a private directory (``$TMPDIR/fibreflow-twin-<uid>/<store>``, mode 0700, owned by
this user, or sharing is off) under a key of what was read: the change token under the store
file's (mtime, size) and its WAL's, a panel's data under the panel, the tokens of its tables
and the filters. The first kernel to want a key reads the store and writes the result; the
others wait on that key's lock file and load it. Results older than ``max_age_s`` are removed.
A read that raised is not shared. Panels share their figures' JSON the same way, under the
``fingerprint`` of what each was built from (``Panel.show``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import hashlib
import os
import pickle
import stat
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import pandas as pd

T = TypeVar("T")
_SCALARS = (str, int, float, bool, type(None), dt.datetime, dt.date, dt.timedelta)


def fingerprint(value: Any) -> str:
    """A digest of ``value`` (frames, series, containers, scalars, dataclasses; anything else by
    its pickle) equal for equal contents, in this process and in another kernel of the host."""
    digest = hashlib.sha256()
    _feed(digest, value)
    return digest.hexdigest()[:32]


def _feed(digest: Any, value: Any) -> None:
    if isinstance(value, pd.DataFrame | pd.Series):
        frame = value.to_frame() if isinstance(value, pd.Series) else value
        digest.update(repr((type(value).__name__, list(frame.columns), [str(t) for t in frame.dtypes],
                            frame.shape)).encode())
        try:
            digest.update(pd.util.hash_pandas_object(value, index=True).to_numpy().tobytes())
        except TypeError:  # unhashable cells (lists, dicts)
            digest.update(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
    elif isinstance(value, list | tuple):
        digest.update(f"{type(value).__name__}{len(value)}[".encode())
        for item in value:
            _feed(digest, item)
    elif isinstance(value, dict):
        digest.update(f"dict{len(value)}{{".encode())
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, (*_SCALARS, np.generic, pd.Timestamp)):
        digest.update(f"{type(value).__name__}:{value!r}\0".encode())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        digest.update(type(value).__qualname__.encode())
        _feed(digest, {f.name: getattr(value, f.name) for f in dataclasses.fields(value)})
    else:
        digest.update(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


class SharedReads:
    """Read results shared through files between the kernels of one user; ``enabled`` False
    (the directory is missing, not this user's or open to others) means every read is local."""

    def __init__(self, store_id: str, *, root: str | Path | None = None, max_age_s: float = 120.0,
                 enabled: bool = True) -> None:
        base = Path(root) if root is not None else Path(tempfile.gettempdir()) / f"fibreflow-twin-{os.getuid()}"
        self.directory = base / hashlib.sha256(store_id.encode()).hexdigest()[:16]
        self.max_age_s = max_age_s
        self.hits = 0
        self.reads = 0
        self._swept = 0.0
        self.enabled = enabled and self._private(base) and self._private(self.directory)

    @staticmethod
    def _private(path: Path) -> bool:
        try:
            path.mkdir(mode=0o700, exist_ok=True)
            st = path.lstat()
        except OSError:
            return False
        # pickles are only loaded from a directory nobody else can write to
        return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077

    def get(self, key: Any, read: Callable[[], T]) -> T:
        """The result of ``read()`` for ``key``: loaded when another kernel has read it, else read
        here (while other kernels wanting the same key wait) and kept for them."""
        if not self.enabled:
            self.reads += 1
            return read()
        digest = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
        path = self.directory / f"{digest}.pkl"
        found = self._load(path)
        if found is not None:
            self.hits += 1
            return cast(T, found[0])
        fd = os.open(self.directory / f"{digest}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # another kernel reading this key: wait for its result
            found = self._load(path)
            if found is not None:
                self.hits += 1
                return cast(T, found[0])
            self.reads += 1
            value = read()
            if not isinstance(value, Exception):
                tmp = path.with_suffix(f".{os.getpid()}.tmp")
                with open(tmp, "wb") as fh:
                    pickle.dump((value,), fh, protocol=pickle.HIGHEST_PROTOCOL)
                tmp.replace(path)
            return value
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            self._sweep()

    @staticmethod
    def _load(path: Path) -> Any:
        """The 1-tuple this class wrote at ``path``, or None."""
        try:
            with open(path, "rb") as fh:
                return pickle.load(fh)
        except (OSError, EOFError, pickle.UnpicklingError):
            return None

    def _sweep(self) -> None:
        now = time.time()
        if now - self._swept < self.max_age_s / 4:
            return
        self._swept = now
        for entry in self.directory.iterdir():
            try:
                if now - entry.stat().st_mtime > self.max_age_s:
                    entry.unlink()
            except OSError:
                pass  # another kernel removed it first
