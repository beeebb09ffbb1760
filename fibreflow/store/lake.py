"""The DuckLake store: a lake shared by many hosts, its catalog on PostgreSQL, its data files in
``store.data_path`` (a directory, or an object-store URL).

``store.url`` is ``ducklake:postgres:<libpq conninfo>``, e.g.
``ducklake:postgres:dbname=fibreflow host=db.internal user=fibreflow``. A password belongs in
``PGPASSWORD`` or ``~/.pgpass``; one written into the conninfo still works but never appears in
``url``, an error or a log line (``redact_url``).

One DuckDB instance per process attaches the lake once; every unit of work gets its own cursor
(its own transaction) with the lake as the default catalog. DuckLake has no primary keys or unique
constraints, and two transactions that touch one table concurrently conflict at commit. So
writers take a cross-host lock first, a PostgreSQL advisory lock on the catalog database (held for
the unit of work, dropped by the server if the process dies): the check-then-insert writers stay
correct across hosts and fibreflow's writers never conflict with each other. What is left (a
commit racing a writer outside fibreflow) is retried a bounded number of times by ``run``. Small
inserts are inlined into the catalog (``DATA_INLINING_ROW_LIMIT``) rather than written as one
Parquet file each; ``compact`` flushes them, merges small files and expires old snapshots.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from fibreflow.config import StoreSettings
from fibreflow.errors import StoreError, StoreLockTimeout, StoreUnreachable
from fibreflow.redaction import redact_url
from fibreflow.store.extensions import load_extension

LAKE_PREFIX = "ducklake:postgres:"
CATALOG = "fibreflow_lake"
#: how often ``run`` tries a unit of work that lost a commit race
COMMIT_RETRIES = 5
_CONFLICT_MARKERS = ("transaction conflict", "failed to commit ducklake transaction")
T = TypeVar("T")
log = logging.getLogger(__name__)


def conninfo_of(url: str) -> str:
    """The libpq conninfo of a ``ducklake:postgres:`` URL (a StoreError for any other catalog)."""
    if not url.startswith(LAKE_PREFIX) or not url[len(LAKE_PREFIX):].strip():
        raise StoreUnreachable(f"{redact_url(url)}: a lake is ducklake:postgres:<libpq conninfo>, "
                         "e.g. ducklake:postgres:dbname=fibreflow host=127.0.0.1 (only a PostgreSQL catalog "
                         "takes several writers)")
    return url[len(LAKE_PREFIX):].strip()


def is_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is DuckLake refusing a commit that raced another one (worth a retry)."""
    text = str(exc).lower()
    return isinstance(exc, duckdb.Error) and any(m in text for m in _CONFLICT_MARKERS)


def _count(cur: duckdb.DuckDBPyConnection) -> int:
    row = cur.fetchone()
    return int(row[0]) if row else 0


@dataclass(frozen=True)
class CompactReport:
    """What one ``compact`` did: live data files and snapshots before and after."""

    files_before: int
    files_after: int
    snapshots_before: int
    snapshots_after: int
    inlined_rows_flushed: int
    files_deleted: int

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``--json`` output."""
        return asdict(self)


class _Attachment:
    """What a process holds of one lake, shared by its engines: the DuckDB instance that attached
    it, the connection that holds the writer lock, and the locks around them."""

    def __init__(self) -> None:
        self.db: duckdb.DuckDBPyConnection | None = None
        self.pg: Any = None  # psycopg.Connection holding the cross-host writer lock
        self.guard = threading.Lock()
        self.writing = threading.RLock()
        self.users = 0


_attachments: dict[tuple[int, str, str, int], _Attachment] = {}
_attachments_guard = threading.Lock()


class LakeEngine:
    """A DuckLake store; cheap to construct, attaches on first use. Engines of one process on
    one lake share one attachment (a ``Store()`` per call costs no new ATTACH)."""

    mode = "ducklake"
    supports_constraints = False

    def __init__(self, url: str, *, settings: StoreSettings | None = None, data_path: str | Path | None = None,
                 inline_rows: int | None = None, lock_timeout_s: float | None = None) -> None:
        """``url`` is ``ducklake:postgres:<conninfo>``; what is not given comes from ``settings``
        (default: the configured ``store`` section): ``data_path``, ``lake_inline_rows``,
        ``lock_timeout_s``."""
        self._conninfo = conninfo_of(url)
        self.url = redact_url(url)
        if settings is None and (data_path is None or inline_rows is None or lock_timeout_s is None):
            from fibreflow.config import load_settings

            settings = load_settings().store
        if settings is not None:
            data_path = data_path if data_path is not None else getattr(settings, "data_path", None)
            inline_rows = settings.lake_inline_rows if inline_rows is None else inline_rows
            lock_timeout_s = settings.lock_timeout_s if lock_timeout_s is None else lock_timeout_s
        if data_path is None or not str(data_path).strip():
            raise StoreUnreachable(f"{self.url} is a lake: set store.data_path (a directory or "
                             "object-store URL for its data files)")
        raw = str(data_path)
        self.data_path = raw if "://" in raw else str(Path(raw).expanduser().resolve())
        self.inline_rows = 1000 if inline_rows is None else inline_rows
        self.lock_timeout_s = 60.0 if lock_timeout_s is None else lock_timeout_s
        self._lock_key = zlib.crc32(f"fibreflow-lake:{self.data_path}".encode()) - 2**31
        # keyed by pid too: a forked child must not use its parent's DuckDB instance
        self._key = (os.getpid(), self._conninfo, self.data_path, self.inline_rows)
        with _attachments_guard:
            self._att = _attachments.setdefault(self._key, _Attachment())
            self._att.users += 1
        self._closed = False

    def __repr__(self) -> str:
        return f"LakeEngine({self.url!r}, data_path={self.data_path!r})"

    # -- attach -------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return redact_url(text.replace(self._conninfo, redact_url(self._conninfo)))

    def _database(self) -> duckdb.DuckDBPyConnection:
        if self._closed:
            raise StoreError(f"{self.url}: this lake engine was closed")
        with self._att.guard:
            if self._att.db is not None:
                return self._att.db
            if "://" not in self.data_path:
                Path(self.data_path).mkdir(parents=True, exist_ok=True)
            con = duckdb.connect()
            try:
                load_extension(con, "ducklake")
                load_extension(con, "postgres_scanner")
                if "://" in self.data_path:
                    load_extension(con, "httpfs")
                con.execute("SET TimeZone = 'UTC'")
                quoted = (LAKE_PREFIX + self._conninfo).replace("'", "''")
                data = self.data_path.replace("'", "''")
                con.execute(f"ATTACH '{quoted}' AS {CATALOG} (DATA_PATH '{data}', "
                            f"DATA_INLINING_ROW_LIMIT {int(self.inline_rows)})")
            except duckdb.Error as exc:
                con.close()
                raise StoreUnreachable(f"{self.url}: cannot attach the DuckLake catalog: "
                                 f"{self._scrub(str(exc)).strip()}; nothing falls back to a local file") from None
            self._att.db = con
            return con

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        db = self._database()
        with self._att.guard:  # one thread at a time makes cursors off the shared connection
            cur = db.cursor()
        cur.execute(f"USE {CATALOG}")
        cur.execute("SET TimeZone = 'UTC'")
        return cur

    # -- the writer lock ----------------------------------------------------------------

    def _pg_lock_connection(self) -> Any:
        import psycopg

        if self._att.pg is None or self._att.pg.closed:
            try:
                self._att.pg = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10)
            except psycopg.Error as exc:
                raise StoreUnreachable(f"{self.url}: cannot reach the catalog for the writer lock: "
                                       f"{self._scrub(str(exc)).strip()}") from None
        return self._att.pg

    def _try_lock(self, pg: Any) -> bool:
        import psycopg

        try:
            return bool(pg.execute("SELECT pg_try_advisory_lock(%s)", [self._lock_key]).fetchone()[0])
        except psycopg.Error as exc:  # the catalog restarted or dropped us: the next unit reconnects
            pg.close()
            raise StoreUnreachable(f"{self.url}: lost the catalog while taking the writer lock: "
                                   f"{self._scrub(str(exc)).strip()}") from None

    @contextmanager
    def _writer_lock(self) -> Iterator[None]:
        deadline = time.monotonic() + self.lock_timeout_s
        if not self._att.writing.acquire(timeout=self.lock_timeout_s):
            raise StoreLockTimeout(f"{self.url}: waited {self.lock_timeout_s:.0f}s for the lake (this process)")
        try:
            pg = self._pg_lock_connection()
            delay = 0.001
            while not self._try_lock(pg):
                if time.monotonic() > deadline:
                    raise StoreLockTimeout(f"{self.url}: another writer held the lake for over "
                                           f"{self.lock_timeout_s:.0f}s")
                time.sleep(delay)
                delay = min(delay * 2, 0.02)
            try:
                yield
            finally:
                try:
                    pg.execute("SELECT pg_advisory_unlock(%s)", [self._lock_key])
                except Exception:  # a lost connection drops the lock with it
                    pg.close()
        finally:
            self._att.writing.release()

    # -- the engine API -----------------------------------------------------------------

    @contextmanager
    def connect(self, *, write: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor for one unit of work, the lake as its default catalog; writers hold the lake's
        cross-host writer lock for the whole unit."""
        cur = self._cursor()
        try:
            if write:
                with self._writer_lock():
                    yield cur
            else:
                yield cur
        except duckdb.Error as exc:
            # the catalog's own errors quote the conninfo: never let its password through
            if self._scrub(str(exc)) != str(exc):
                raise StoreError(f"{self.url}: {self._scrub(str(exc)).strip()}") from None
            raise
        finally:
            cur.close()

    def run(self, work: Callable[[duckdb.DuckDBPyConnection], T], *, write: bool = True,
            retries: int = COMMIT_RETRIES) -> T:
        """``work(con)`` in one unit of work, run again (up to ``retries`` times, with a growing
        pause) when its commit lost a race; ``work`` must be safe to repeat after a rollback."""
        for attempt in range(retries + 1):
            try:
                with self.connect(write=write) as con:
                    return work(con)
            except duckdb.Error as exc:
                if not is_conflict(exc) or attempt == retries:
                    raise StoreError(f"{self.url}: {self._scrub(str(exc)).strip()}") from None
                log.info("lake commit conflict, retry %d of %d: %s", attempt + 1, retries, self._scrub(str(exc)))
                time.sleep(0.05 * 2 ** attempt)
        raise AssertionError("unreachable")  # the loop returns or raises

    def compact(self, *, retention_s: float = 7 * 86_400.0) -> CompactReport:
        """Flush inlined rows to files, merge small adjacent files, expire snapshots older than
        ``retention_s`` and delete the files no snapshot needs any more (DuckLake's own functions)."""

        def counts(con: duckdb.DuckDBPyConnection) -> tuple[int, int]:
            tables = [r[0] for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_catalog = ?", [CATALOG]).fetchall()]
            files = sum(_count(con.execute(f"SELECT count(*) FROM ducklake_list_files('{CATALOG}', ?)", [t]))
                        for t in tables)
            return files, _count(con.execute(f"SELECT count(*) FROM ducklake_snapshots('{CATALOG}')"))

        def work(con: duckdb.DuckDBPyConnection) -> CompactReport:
            files_before, snaps_before = counts(con)
            flushed = con.execute(f"CALL ducklake_flush_inlined_data('{CATALOG}')").fetchall()
            con.execute(f"CALL ducklake_merge_adjacent_files('{CATALOG}')").fetchall()
            cutoff = f"now() - to_microseconds({int(retention_s * 1e6)})"
            con.execute(f"CALL ducklake_expire_snapshots('{CATALOG}', older_than => {cutoff})").fetchall()
            deleted = con.execute(f"CALL ducklake_cleanup_old_files('{CATALOG}', older_than => {cutoff})").fetchall()
            files_after, snaps_after = counts(con)
            return CompactReport(files_before, files_after, snaps_before, snaps_after,
                                 sum(int(r[-1] or 0) for r in flushed), len(deleted))

        return self.run(work)

    def close(self) -> None:
        """Let go of the lake; the last engine of the process on it detaches it and drops the
        lock connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        with _attachments_guard:
            self._att.users -= 1
            if self._att.users > 0:
                return
            _attachments.pop(self._key, None)
        with self._att.guard:
            db, self._att.db = self._att.db, None
            pg, self._att.pg = self._att.pg, None
        if db is not None:
            db.close()
        if pg is not None:
            pg.close()


def lake_of(store: object) -> LakeEngine | None:
    """The lake engine behind ``store`` (a ``Store``), or None when it is a file or a server."""
    engine = getattr(store, "engine", None)
    return engine if isinstance(engine, LakeEngine) else None


def compact_store(store: object, *, retention_s: float | None = None) -> CompactReport:
    """``compact`` the lake behind ``store`` (retention: ``store.snapshot_retention_s``); a
    StoreError naming the store's mode when it is not a lake."""
    lake = lake_of(store)
    if lake is None:
        mode = getattr(getattr(store, "engine", None), "mode", "duckdb")
        where = getattr(store, "url", None) or getattr(store, "path", "")
        raise StoreError(f"store compact: {where} is a {mode} store; only a DuckLake store "
                         "(store.url ducklake:postgres:...) has data files and snapshots to compact")
    if retention_s is None:
        from fibreflow.config import load_settings

        retention_s = load_settings().store.snapshot_retention_s
    return lake.compact(retention_s=retention_s)


__all__ = ["CATALOG", "CompactReport", "LakeEngine", "compact_store", "conninfo_of", "is_conflict", "lake_of"]
