"""Where the store's tables live: one engine per mode, chosen by the store URL.

- ``duckdb:///abs/path.duckdb`` or a plain path: ``FileEngine``, the embedded file, opened per
  unit of work behind a cross-process lock file; while a store server for that file runs
  (``fibreflow store serve``, found by its record beside the file), it attaches to the server.
- ``quack://host:port``: ``QuackEngine`` (``store/quack.py``), a store server; the token comes
  from ``FIBREFLOW_STORE_TOKEN``. Its connections are ``remote.RemoteConnection`` objects (the
  ``execute``/``fetch*``/``df`` subset of a DuckDB connection; every statement runs on the server).
- ``ducklake:postgres:<libpq conninfo>``: ``fibreflow.store.lake.LakeEngine(url, settings=...)``,
  a DuckLake whose catalog is in PostgreSQL and whose data sits under ``store.data_path``.

Every engine yields connections whose default catalog and schema are the store, so unqualified
table names work. ``supports_constraints`` False (DuckLake) makes migrations use
``schema.migration_sql(migration, constraints=False)``. Nothing outside ``store/`` knows the mode.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import duckdb

from fibreflow.errors import ForeignDatabaseError, StoreError, StoreLockTimeout, StoreUnreachable
from fibreflow.redaction import redact_url
from fibreflow.store.discovery import TOKEN_ENV, ServerRecord, find_server
from fibreflow.store.quack import QuackEngine, shared_engine

if TYPE_CHECKING:
    from fibreflow.config import StoreSettings

_DUCKDB_MAGIC = b"DUCK"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_process_locks: dict[str, threading.RLock] = {}
_process_locks_guard = threading.Lock()
_host_instances: dict[int, duckdb.DuckDBPyConnection] = {}


class StoreEngine(Protocol):
    """One store mode: how to get a connection to the store's tables."""

    mode: str
    """``duckdb``, ``quack`` or ``ducklake``."""
    url: str
    """The store's URL for messages: never a token or password."""
    supports_constraints: bool
    """False when tables cannot have PRIMARY KEY, UNIQUE or indexes (DuckLake)."""

    def connect(self, *, write: bool) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        """A connection for one unit of work, its default catalog and schema the store's."""
        ...

    def close(self) -> None:
        """Release what the engine holds (client databases, attachments)."""
        ...


def open_engine(url: str, *, settings: StoreSettings | None = None) -> StoreEngine:
    """The engine for store ``url`` (see the module docstring for the forms); anything else is a
    ``StoreError`` naming the (redacted) URL."""
    if settings is None:
        from fibreflow.config import load_settings

        settings = load_settings().store
    text = str(url).strip()
    match = _SCHEME.match(text)
    scheme = match.group(1).lower() if match else None
    if scheme is None:
        if not text:
            raise StoreUnreachable("store URL is empty (store.url / FIBREFLOW_STORE)")
        return FileEngine(Path(text), lock_timeout_s=settings.lock_timeout_s)
    if scheme == "duckdb":
        rest = text[len("duckdb:"):]
        path = rest[2:] if rest.startswith("//") else rest
        if not path or path == "/":
            raise StoreUnreachable(f"store URL {redact_url(text)!r} names no file; write duckdb:///abs/path.duckdb")
        return FileEngine(Path(path), lock_timeout_s=settings.lock_timeout_s)
    if scheme == "quack":
        host, port = _host_port(text)
        return shared_engine(host, port, token=os.environ.get(TOKEN_ENV), lock_timeout_s=settings.lock_timeout_s)
    if scheme == "ducklake":
        try:
            from fibreflow.store.lake import LakeEngine
        except ImportError as exc:
            raise StoreUnreachable(f"store URL {redact_url(text)!r}: DuckLake mode is not available in this "
                             f"fibreflow ({exc})") from exc
        engine: StoreEngine = LakeEngine(text, settings=settings)
        return engine
    raise StoreUnreachable(f"store URL {redact_url(text)!r}: unknown scheme {scheme!r}; use duckdb:///path/file.duckdb, "
                     "quack://host:port or ducklake:postgres:<conninfo>")


def _host_port(url: str) -> tuple[str, int]:
    match = re.fullmatch(r"quack://(\[[0-9A-Fa-f:]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?/?", url)
    if not match:
        raise StoreUnreachable(f"store URL {redact_url(url)!r} is not quack://host:port")
    port = int(match.group(2) or 9494)
    if not 0 < port < 65536:
        raise StoreUnreachable(f"store URL {redact_url(url)!r}: port {port} is out of range")
    return match.group(1), port


def _host_instance() -> duckdb.DuckDBPyConnection:
    """This process's in-memory DuckDB instance, which file stores attach to per unit of work."""
    pid = os.getpid()
    with _process_locks_guard:
        con = _host_instances.get(pid)
        if con is None:
            # A forked child keeps its parent's instance referenced and never closes it: closing
            # would join threads that do not exist in the child.
            con = duckdb.connect(":memory:")
            con.execute("SET GLOBAL TimeZone = 'UTC'")
            _host_instances[pid] = con
        return con


def _process_lock(path: Path) -> threading.RLock:
    with _process_locks_guard:
        return _process_locks.setdefault(str(path), threading.RLock())


class FileEngine:
    """The embedded DuckDB file; while a store server owns it, its server instead.

    DuckDB lets one process write a file and no other process even read it meanwhile, so the
    file is held for one unit of work only, behind a lock file: shared for readers, exclusive for
    writers, and threads of one process take turns. A unit attaches the file to this process's
    DuckDB instance and detaches it at the end (which checkpoints and drops DuckDB's own file
    lock): starting an instance costs ~15 ms (its built-in extensions register every time),
    attaching ~2 ms, and the lock is held for the unit only.
    """

    mode = "duckdb"
    supports_constraints = True

    def __init__(self, path: Path, *, lock_timeout_s: float = 60.0) -> None:
        self.path = Path(path).expanduser().resolve()
        self.url = f"duckdb://{self.path}"
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.gate_path = self.path.with_name(self.path.name + ".lock.gate")  # see _locked
        self.lock_timeout_s = lock_timeout_s
        self._thread_lock = _process_lock(self.path)
        self._remote: QuackEngine | None = None
        self._remote_pid: int | None = None
        self._checked = False
        self._alias = "fibreflow_" + hashlib.sha256(str(self.path).encode()).hexdigest()[:12]
        self._attached_read_only: bool | None = None  # while a unit holds the file: how it is attached
        self._holder: int | None = None  # and the thread holding it

    def server(self) -> ServerRecord | None:
        """The store server that owns this file now, if one runs on this host."""
        return find_server(self.path)

    def _server_engine(self) -> QuackEngine | None:
        record = self.server()
        if record is None:
            return None
        if self._remote is None or self._remote_pid != record.pid:
            self._remote = shared_engine(record.host, record.port, token=record.token(),
                                         lock_timeout_s=self.lock_timeout_s,
                                         via=f"the store server for {self.path} (pid {record.pid})")
            self._remote_pid = record.pid
        return self._remote

    @contextmanager
    def connect(self, *, write: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        remote = self._server_engine()
        if remote is not None:
            with remote.connect(write=write) as con:
                yield con
            return
        if self._holder == threading.get_ident():  # inside this thread's unit: the file is held already
            with self._attached(read_only=not write) as con:
                yield con
            return
        with self._locked(write=write) as remote:
            if remote is not None:
                with remote.connect(write=write) as con:
                    yield con
                return
            with self._attached(read_only=not write) as con:
                yield con

    @contextmanager
    def _locked(self, *, write: bool) -> Iterator[QuackEngine | None]:
        deadline = time.monotonic() + self.lock_timeout_s
        if not self._thread_lock.acquire(timeout=self.lock_timeout_s):
            raise StoreLockTimeout(f"{self.path}: waited {self.lock_timeout_s:.0f}s for the store (this process)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            gate = os.open(self.gate_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                # Writers first: a waiting writer holds the gate, so readers that come after it
                # queue behind it instead of keeping the shared lock busy for ever.
                remote = self._flock(gate, fcntl.LOCK_EX if write else fcntl.LOCK_SH, deadline)
                if remote is None:
                    try:
                        remote = self._flock(fd, fcntl.LOCK_EX if write else fcntl.LOCK_SH, deadline)
                    finally:
                        fcntl.flock(gate, fcntl.LOCK_UN)
                if remote is not None:
                    # a server that started meanwhile holds the lock for its life: use it
                    yield remote
                    return
                try:
                    yield None
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(gate)
                os.close(fd)
        finally:
            self._thread_lock.release()

    def _flock(self, fd: int, mode: int, deadline: float) -> QuackEngine | None:
        """Take ``mode`` on ``fd`` (None), or the engine of a server that started meanwhile."""
        delay = 0.0005
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                return None
            except BlockingIOError:
                remote = self._server_engine()
                if remote is not None:
                    return remote
                if time.monotonic() > deadline:
                    raise StoreLockTimeout(
                        f"{self.path}: another process held the store for over "
                        f"{self.lock_timeout_s:.0f}s (lock file {self.lock_path})") from None
                time.sleep(delay)
                delay = min(delay * 2, 0.01)

    def _check_file(self) -> None:
        if self._checked:
            return
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as fh:
                header = fh.read(12)
            if header[8:12] != _DUCKDB_MAGIC:
                raise ForeignDatabaseError(
                    f"{self.path} is not a DuckDB file (corrupt or foreign); refusing to use it, it was "
                    "left untouched. Point FIBREFLOW_DB elsewhere or move the file away.")
        self._checked = True

    @contextmanager
    def _attached(self, *, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection whose default catalog is the file, attached for the unit of work. The
        caller holds the locks, so only this thread attaches it meanwhile; a unit opened inside
        another (a read inside a read) shares the attachment."""
        host = _host_instance()
        outer = self._attached_read_only is None
        if outer:
            self._check_file()
            self._attach(host, read_only=read_only)
            self._attached_read_only, self._holder = read_only, threading.get_ident()
        elif self._attached_read_only and not read_only:
            raise StoreError(f"{self.path}: a write was asked for inside a read of the store in the same thread")
        try:
            con = host.cursor()
            try:
                con.execute(f"USE {self._alias}")
                yield con
            finally:
                con.close()  # rolls back whatever the unit left open
        finally:
            if outer:
                self._attached_read_only = self._holder = None
                self._detach(host)

    def _attach(self, host: duckdb.DuckDBPyConnection, *, read_only: bool) -> None:
        setup = host.cursor()
        try:
            setup.execute(f"DETACH DATABASE IF EXISTS {self._alias}")  # left by a detach that failed
            path = str(self.path).replace("'", "''")
            setup.execute(f"ATTACH '{path}' AS {self._alias}" + (" (READ_ONLY)" if read_only else ""))
        except duckdb.Error as exc:
            if "lock" in str(exc).lower():
                raise StoreError(f"{self.path}: held by a process that does not use fibreflow's lock: {exc}") from exc
            raise ForeignDatabaseError(f"{self.path}: cannot open as DuckDB ({exc}); the file was left untouched") from exc
        finally:
            setup.close()

    def _detach(self, host: duckdb.DuckDBPyConnection) -> None:
        """Detach the file: DuckDB checkpoints it and lets go of its own lock on it."""
        setup = host.cursor()
        try:
            setup.execute(f"DETACH DATABASE IF EXISTS {self._alias}")
        except duckdb.Error as exc:
            raise StoreError(f"{self.path}: could not close the store file: {exc}") from exc
        finally:
            setup.close()

    def close(self) -> None:
        self._remote = None  # the server's engine is shared by the process's stores: left open
