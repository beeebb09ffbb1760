"""The store's API: ``Store`` over one engine (see ``engines``), whatever mode it runs in.

A connection lives for one unit of work only; the engine decides what that means (the embedded
file behind its lock, a store server, a lake). Threads of one process write through
``BatchWriter``, which batches their rows.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import duckdb
import pandas as pd

from fibreflow.errors import ForeignDatabaseError, StoreError
from fibreflow.store import schema
from fibreflow.store.engines import FileEngine, StoreEngine, open_engine
from fibreflow.store.schema import LATEST_VERSION, MIGRATIONS

if TYPE_CHECKING:
    from fibreflow.config import Settings

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_hooks_guard = threading.Lock()
_open_hooks: list[Callable[[Store], None]] = []
_hooked_paths: set[tuple[str, int]] = set()
log = logging.getLogger(__name__)


def add_open_hook(hook: Callable[[Store], None]) -> None:
    """Call ``hook(store)`` once per process and store, right after the store is first migrated.

    The store cannot know what its tables mean (their owners sit in later layers), so a command
    hands it their housekeeping this way: the CLI registers the build's crash sweep
    (``fibreflow.build.records.mark_crashed_runs``), and so the first command that opens the store
    after a crash marks the crashed runs. A failing hook is logged, never raised.
    """
    with _hooks_guard:
        if hook not in _open_hooks:
            _open_hooks.append(hook)


def _run_open_hooks(store: Store) -> None:
    key = (store.url, os.getpid())
    with _hooks_guard:
        if key in _hooked_paths or not _open_hooks:
            return
        _hooked_paths.add(key)
        hooks = list(_open_hooks)
    for hook in hooks:
        try:
            hook(store)
        except Exception as exc:  # housekeeping must not keep a command from its store
            log.warning("store open hook %s failed on %s: %s", getattr(hook, "__name__", hook), store.url, exc)


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise StoreError(f"invalid table or column name: {name!r}")
    return name


def configured_url(settings: Settings | None = None) -> str:
    """The store URL commands use: ``store.url`` (``FIBREFLOW_STORE``), else the file ``db_path``
    (``FIBREFLOW_DB``)."""
    if settings is None:
        from fibreflow.config import load_settings

        settings = load_settings()
    return settings.store.url or str(settings.db_path)


def store_tables(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The tables of the store ``con`` is on (its default catalog and schema, whichever the mode
    attaches; never another attached catalog's)."""
    return [r[0] for r in con.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_catalog = current_database() "
        "AND table_schema = current_schema() ORDER BY table_name").fetchall()]


def apply_migrations(con: duckdb.DuckDBPyConnection, where: str, *, constraints: bool = True) -> int:
    """Create or upgrade the schema through ``con`` (default catalog: the store); returns the
    version now in force. ``where`` names the store in errors."""
    tables = set(store_tables(con))
    if "schema_version" not in tables:
        if tables:
            raise ForeignDatabaseError(
                f"{where} is a DuckDB store of something else (tables: {', '.join(sorted(tables)[:5])}); "
                "refusing to use it, it was left untouched")
        con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, description VARCHAR, "
                    "applied_at TIMESTAMPTZ NOT NULL)")
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    current = row[0] if row else 0  # an aggregate always returns one row
    if current > LATEST_VERSION:
        raise ForeignDatabaseError(
            f"{where} has schema version {current}, newer than this fibreflow knows "
            f"({LATEST_VERSION}); upgrade fibreflow")
    sql_of = getattr(schema, "migration_sql", None)
    for migration in MIGRATIONS:
        if migration.version <= current:
            continue
        if constraints:
            sql = migration.sql
        elif sql_of is not None:
            sql = sql_of(migration, constraints=False)
        else:
            raise StoreError(f"{where}: this store mode takes no constraints, and this fibreflow has no "
                             f"constraint-free form of migration {migration.version}")
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(sql)
            con.execute("INSERT INTO schema_version VALUES (?, ?, now())",
                        [migration.version, migration.description])
            con.execute("COMMIT")
        except duckdb.Error as exc:
            con.execute("ROLLBACK")
            hint = (" (a store server migrates its file when it starts: restart `fibreflow store serve` "
                    "with this fibreflow)") if isinstance(exc, duckdb.NotImplementedException) else ""
            raise StoreError(f"{where}: migration {migration.version} failed: {exc}{hint}") from exc
        current = migration.version
    return current


def _same_file(a: str | Path, b: str | Path) -> bool:
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


class StoreReader(Protocol):
    """What read-only code needs of a store: a ``Store``, or a read session over one connection
    already open (the twin's ``ReadSession``), which several queries in a row can share."""

    @property
    def path(self) -> Path: ...

    def query_df(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pd.DataFrame: ...

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any: ...

    def connect(self, *, write: bool = False) -> AbstractContextManager[duckdb.DuckDBPyConnection]: ...


class Store:
    """The store. Cheap to construct; every method opens and closes its own connection.

    ``Store(path)`` is the DuckDB file at ``path`` (or its running store server); ``Store()`` and
    ``Store.from_url(url)`` use the configured URL (``store.url``, ``FIBREFLOW_STORE``, else
    ``db_path``) or ``url``.
    """

    def __init__(self, path: str | Path | None = None, *, lock_timeout_s: float | None = None,
                 engine: StoreEngine | None = None) -> None:
        if engine is None:
            from fibreflow.config import load_settings

            settings = load_settings()
            store_settings = settings.store
            if lock_timeout_s is not None:
                store_settings = store_settings.model_copy(update={"lock_timeout_s": lock_timeout_s})
            url = configured_url(settings)
            if path is not None and not (settings.store.url and _same_file(path, settings.db_path)):
                # callers pass db_path to mean "the configured store": with store.url set, that is the URL
                url = str(path)
            engine = open_engine(url, settings=store_settings)
        self.engine = engine
        local = getattr(engine, "path", None)
        self.path = Path(local) if local is not None else Path(engine.url)
        self.lock_path = getattr(engine, "lock_path", None)
        self.lock_timeout_s = getattr(engine, "lock_timeout_s", lock_timeout_s or 60.0)
        self.wait_times_s: list[float] = []
        self._ready = False

    @classmethod
    def from_url(cls, url: str, *, settings: Settings | None = None) -> Store:
        """The store at ``url`` (``duckdb:///...``, a path, ``quack://...``, ``ducklake:postgres:...``)."""
        return cls(engine=open_engine(url, settings=settings.store if settings is not None else None))

    @property
    def url(self) -> str:
        """The store's URL for messages (no token, no password)."""
        return self.engine.url

    def exists(self) -> bool:
        """Whether the store holds anything yet (a file mode store: whether its file exists)."""
        return self.path.exists() if isinstance(self.engine, FileEngine) else True

    def describe(self) -> str:
        """The mode and URL this store uses, and the store server found for a file, if any."""
        text = f"{self.engine.mode} {self.engine.url}"
        if isinstance(self.engine, FileEngine):
            record = self.engine.server()
            text += (f" (store server found: {record.url}, pid {record.pid}; used instead of the file)"
                     if record is not None else " (no store server running for it)")
        return text

    def close(self) -> None:
        """Release the engine's client connections (a file store holds none between calls)."""
        self.engine.close()

    # -- access -------------------------------------------------------------------------

    @contextmanager
    def connect(self, *, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one short unit of work; never hold it across slow operations."""
        if not self._ready:
            self.migrate()
        started = time.monotonic()
        with self.engine.connect(write=write) as con:
            self.wait_times_s.append(time.monotonic() - started)
            yield con

    # -- schema -------------------------------------------------------------------------

    def migrate(self) -> int:
        """Create or upgrade the schema; returns the version now in force."""
        with self.engine.connect(write=True) as con:
            where = str(self.path) if isinstance(self.engine, FileEngine) else self.url
            version = apply_migrations(con, where, constraints=self.engine.supports_constraints)
        self._ready = True
        _run_open_hooks(self)
        return version

    def schema_version(self) -> int:
        """The schema version recorded in the store."""
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


def _with_row_ids(table: str, groups: Mapping[tuple[str, ...], list[Mapping[str, Any]]]
                  ) -> Mapping[tuple[str, ...], list[Mapping[str, Any]]]:
    column = schema.ROW_ID_COLUMNS.get(table)
    if column is None or all(column in cols for cols in groups):
        return groups
    out: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for cols, group in groups.items():
        if column in cols:
            out.setdefault(cols, []).extend(group)
        else:
            out.setdefault((column, *cols), []).extend({column: schema.new_row_id(), **row} for row in group)
    return out


def _insert_groups(con: duckdb.DuckDBPyConnection, table: str,
                   groups: Mapping[tuple[str, ...], list[Mapping[str, Any]]]) -> int:
    groups = _with_row_ids(table, groups)
    statements: list[tuple[str, list[Any]]] = []
    for cols, group in groups.items():
        names = ", ".join(f'"{_ident(c)}"' for c in cols)
        marks = "(" + ", ".join("?" for _ in cols) + ")"
        # multi-row VALUES: ~20x faster than executemany, which binds and runs row by row
        step = max(1, 2000 // len(cols))
        for i in range(0, len(group), step):
            chunk = group[i:i + step]
            statements.append((f"INSERT INTO {table} ({names}) VALUES {', '.join([marks] * len(chunk))}",
                               [r[c] for r in chunk for c in cols]))
    total = sum(len(group) for group in groups.values())
    if len(statements) == 1:  # one statement is atomic on its own: no round trips for BEGIN/COMMIT
        con.execute(*statements[0])
        return total
    con.execute("BEGIN TRANSACTION")
    try:
        for sql, params in statements:
            con.execute(sql, params)
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
    """The store at ``path`` or the configured one (``store.url``, ``FIBREFLOW_STORE``, else
    ``db_path``), migrated and ready."""
    store = Store(path)
    store.migrate()
    return store
