"""The DuckDB store: schema, migrations, cross-process-safe access and DataFrame readers.

DuckDB lets one process write a file and no other process even read it meanwhile, and several
fibreflow processes share the store (an SLA watcher, a build, reports, dashboard kernels).
So a connection lives for one unit of work only, behind a lock file: shared for readers
(DuckDB allows many read-only openers), exclusive for writers. Threads of one process are
serialised by an in-process lock, and their writes are batched by ``BatchWriter``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

import duckdb
import pandas as pd

from fibreflow.errors import ForeignDatabaseError, StoreError, StoreLockTimeout
from fibreflow.store.schema import LATEST_VERSION, MIGRATIONS

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DUCKDB_MAGIC = b"DUCK"
_process_locks: dict[str, threading.RLock] = {}
_process_locks_guard = threading.Lock()
_open_hooks: list[Callable[[Store], None]] = []
_hooked_paths: set[tuple[str, int]] = set()
log = logging.getLogger(__name__)


def add_open_hook(hook: Callable[[Store], None]) -> None:
    """Call ``hook(store)`` once per process and file, right after the file is first migrated.

    The store cannot know what its tables mean (their owners sit in later layers), so a command
    hands it their housekeeping this way: the CLI registers the build's crash sweep
    (``fibreflow.build.records.mark_crashed_runs``), and so the first command that opens the store
    after a crash marks the crashed runs. A failing hook is logged, never raised.
    """
    with _process_locks_guard:
        if hook not in _open_hooks:
            _open_hooks.append(hook)


def _run_open_hooks(store: Store) -> None:
    key = (str(store.path), os.getpid())
    with _process_locks_guard:
        if key in _hooked_paths or not _open_hooks:
            return
        _hooked_paths.add(key)
        hooks = list(_open_hooks)
    for hook in hooks:
        try:
            hook(store)
        except Exception as exc:  # housekeeping must not keep a command from its store
            log.warning("store open hook %s failed on %s: %s", getattr(hook, "__name__", hook), store.path, exc)


def _process_lock(path: Path) -> threading.RLock:
    with _process_locks_guard:
        return _process_locks.setdefault(str(path), threading.RLock())


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise StoreError(f"invalid table or column name: {name!r}")
    return name


class StoreReader(Protocol):
    """What read-only code needs of a store: a ``Store``, or a read session over one connection
    already open (the twin's ``ReadSession``), which several queries in a row can share."""

    @property
    def path(self) -> Path: ...

    def query_df(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame: ...

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any: ...

    def connect(self, *, write: bool = False) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...


class Store:
    """One DuckDB file. Cheap to construct; every method opens and closes its own connection."""

    def __init__(self, path: str | Path | None = None, *, lock_timeout_s: float | None = None) -> None:
        if path is None or lock_timeout_s is None:
            from fibreflow.config import load_settings

            settings = load_settings()
            path = settings.db_path if path is None else path
            lock_timeout_s = settings.store.lock_timeout_s if lock_timeout_s is None else lock_timeout_s
        self.path = Path(path).expanduser().resolve()
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout_s = lock_timeout_s
        self.wait_times_s: list[float] = []
        self._ready = False
        self._thread_lock = _process_lock(self.path)

    # -- access -------------------------------------------------------------------------

    @contextmanager
    def _locked(self, *, write: bool) -> Iterator[None]:
        deadline = time.monotonic() + self.lock_timeout_s
        if not self._thread_lock.acquire(timeout=self.lock_timeout_s):
            raise StoreLockTimeout(f"{self.path}: waited {self.lock_timeout_s:.0f}s for the store (this process)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                mode = (fcntl.LOCK_EX if write else fcntl.LOCK_SH) | fcntl.LOCK_NB
                delay = 0.0005
                while True:
                    try:
                        fcntl.flock(fd, mode)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise StoreLockTimeout(
                                f"{self.path}: another process held the store for over "
                                f"{self.lock_timeout_s:.0f}s (lock file {self.lock_path})") from None
                        time.sleep(delay)
                        delay = min(delay * 2, 0.01)
                try:
                    yield
                finally:
                    fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        finally:
            self._thread_lock.release()

    @contextmanager
    def connect(self, *, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one short unit of work; never hold it across slow operations."""
        if not self._ready:
            self.migrate()
        started = time.monotonic()
        with self._locked(write=write):
            con = self._open(read_only=not write)
            self.wait_times_s.append(time.monotonic() - started)
            try:
                yield con
            finally:
                con.close()

    def _open(self, *, read_only: bool) -> duckdb.DuckDBPyConnection:
        try:
            con = duckdb.connect(str(self.path), read_only=read_only)
        except duckdb.Error as exc:
            if "lock" in str(exc).lower():
                raise StoreError(f"{self.path}: held by a process that does not use fibreflow's lock: {exc}") from exc
            raise ForeignDatabaseError(f"{self.path}: cannot open as DuckDB ({exc}); the file was left untouched") from exc
        con.execute("SET TimeZone = 'UTC'")
        return con

    # -- schema -------------------------------------------------------------------------

    def _check_file(self) -> None:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb") as fh:
            header = fh.read(12)
        if header[8:12] != _DUCKDB_MAGIC:
            raise ForeignDatabaseError(
                f"{self.path} is not a DuckDB file (corrupt or foreign); refusing to use it, it was "
                "left untouched. Point FIBREFLOW_DB elsewhere or move the file away.")

    def migrate(self) -> int:
        """Create or upgrade the schema; returns the version now in force."""
        with self._locked(write=True):
            self._check_file()
            con = self._open(read_only=False)
            try:
                version = self._migrate(con)
            finally:
                con.close()
        self._ready = True
        _run_open_hooks(self)
        return version

    def _migrate(self, con: duckdb.DuckDBPyConnection) -> int:
        tables = {r[0] for r in con.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
        if "schema_version" not in tables:
            if tables:
                raise ForeignDatabaseError(
                    f"{self.path} is a DuckDB file of something else (tables: {', '.join(sorted(tables)[:5])}); "
                    "refusing to use it, it was left untouched")
            con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, description VARCHAR, "
                        "applied_at TIMESTAMPTZ NOT NULL)")
        row = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        current = row[0] if row else 0  # an aggregate always returns one row
        if current > LATEST_VERSION:
            raise ForeignDatabaseError(
                f"{self.path} has schema version {current}, newer than this fibreflow knows "
                f"({LATEST_VERSION}); upgrade fibreflow")
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(migration.sql)
                con.execute("INSERT INTO schema_version VALUES (?, ?, now())",
                            [migration.version, migration.description])
                con.execute("COMMIT")
            except duckdb.Error as exc:
                con.execute("ROLLBACK")
                raise StoreError(f"{self.path}: migration {migration.version} failed: {exc}") from exc
            current = migration.version
        return current

    def schema_version(self) -> int:
        """The schema version recorded in the file."""
        return int(self.scalar("SELECT max(version) FROM schema_version") or 0)

    # -- reading ------------------------------------------------------------------------

    def query_df(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Run a read query and return a DataFrame (timestamps in UTC)."""
        with self.connect() as con:
            return con.execute(sql, params or []).df()

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        """The first column of the first row, or None."""
        with self.connect() as con:
            row = con.execute(sql, params or []).fetchone()
        return row[0] if row else None

    # -- writing ------------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> None:
        """Run one write statement in its own short transaction."""
        with self.connect(write=True) as con:
            con.execute(sql, params or [])

    def insert_rows(self, table: str, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert rows (dicts) in one transaction; returns how many were written."""
        groups = _group_by_columns(rows)
        if not groups:
            return 0
        with self.connect(write=True) as con:
            return _insert_groups(con, _ident(table), groups)

    def writer(self, **kwargs: Any) -> BatchWriter:
        """An in-process writer that batches rows queued from many threads."""
        return BatchWriter(self, **kwargs)


def _group_by_columns(rows: Iterable[Mapping[str, Any]]) -> dict[tuple[str, ...], list[Mapping[str, Any]]]:
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row), []).append(row)
    return groups


def _insert_groups(con: duckdb.DuckDBPyConnection, table: str,
                   groups: Mapping[tuple[str, ...], list[Mapping[str, Any]]]) -> int:
    total = 0
    con.execute("BEGIN TRANSACTION")
    try:
        for cols, group in groups.items():
            names = ", ".join(f'"{_ident(c)}"' for c in cols)
            marks = "(" + ", ".join("?" for _ in cols) + ")"
            # multi-row VALUES: ~20x faster than executemany, which binds and runs row by row
            step = max(1, 2000 // len(cols))
            for i in range(0, len(group), step):
                chunk = group[i:i + step]
                con.execute(f"INSERT INTO {table} ({names}) VALUES {', '.join([marks] * len(chunk))}",
                            [r[c] for r in chunk for c in cols])
            total += len(group)
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return total


class BatchWriter:
    """Queue rows from any thread; one background thread writes them in batches.

    A failed write keeps its rows queued and is retried, so a busy store delays rows but never
    drops them. ``flush()`` waits until everything queued so far is stored.
    """

    def __init__(self, store: Store, *, batch_size: int = 500, flush_interval_s: float = 0.2) -> None:
        self.store = store
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.rows_written = 0
        self.last_error: Exception | None = None
        self._queue: queue.Queue[tuple[str, Mapping[str, Any]] | None] = queue.Queue()
        self._pending = 0
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="fibreflow-store-writer", daemon=True)
        self._thread.start()

    def put(self, table: str, row: Mapping[str, Any]) -> None:
        """Queue one row for ``table``."""
        if self._closed:
            raise StoreError("BatchWriter is closed")
        _ident(table)
        with self._cond:
            self._pending += 1
        self._queue.put((table, dict(row)))

    def _loop(self) -> None:
        batch: list[tuple[str, Mapping[str, Any]]] = []
        stop = False
        while not stop or batch:
            if not stop:
                try:
                    item = self._queue.get(timeout=self.flush_interval_s)
                    if item is None:
                        stop = True
                    else:
                        batch.append(item)
                        while len(batch) < self.batch_size:
                            nxt = self._queue.get_nowait()
                            if nxt is None:
                                stop = True
                                break
                            batch.append(nxt)
                except queue.Empty:
                    pass
            if not batch:
                continue
            try:
                self._write(batch)
            except Exception as exc:  # kept queued and retried: a busy store must not lose rows
                self.last_error = exc
                time.sleep(min(self.flush_interval_s, 0.5))
                continue
            with self._cond:
                self._pending -= len(batch)
                self.rows_written += len(batch)
                self._cond.notify_all()
            batch = []

    def _write(self, batch: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        by_table: dict[str, list[Mapping[str, Any]]] = {}
        for table, row in batch:
            by_table.setdefault(table, []).append(row)
        with self.store.connect(write=True) as con:
            for table, rows in by_table.items():
                _insert_groups(con, table, _group_by_columns(rows))

    def flush(self, timeout: float | None = None) -> None:
        """Block until every row queued so far has been written."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise StoreError(f"{self._pending} rows still queued after {timeout}s"
                                     + (f" (last error: {self.last_error})" if self.last_error else ""))
                self._cond.wait(timeout=0.05 if remaining is None else min(0.05, remaining))

    def close(self) -> None:
        """Flush and stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._thread.join()

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_store(path: str | Path | None = None) -> Store:
    """The store at ``path`` or the configured one, migrated and ready."""
    store = Store(path)
    store.migrate()
    return store
