"""The store server: one process owns the DuckDB file and serves it over Quack.

``serve(db, host, port)`` takes the file's lock for its whole life (so no process opens the file
behind its back), migrates the schema, serves the file as the catalog ``fibreflow_store`` with
``quack_serve`` and publishes its record beside the file (``discovery``). Every ``Store`` of that
file on this host then goes through the server. The token comes from ``FIBREFLOW_STORE_TOKEN``
or is generated, and is kept in a 0600 file beside the store for this host's clients; it is
never printed or logged. A second server for the same file refuses to start and names the first.
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from fibreflow.errors import StoreError
from fibreflow.store.discovery import (
    ServerRecord,
    find_server,
    remove_record,
    server_token,
    token_path,
    write_record,
)
from fibreflow.store.engines import FileEngine
from fibreflow.store.extensions import load_extension
from fibreflow.store.quack import SERVED_CATALOG

LOOPBACK = ("127.0.0.1", "::1", "localhost")


class ServerRunning(StoreError):
    """Another store server already owns the file."""


def _refuse_if_running(db: Path) -> None:
    record = find_server(db)
    if record is not None:
        raise ServerRunning(f"{db}: a store server already serves it (pid {record.pid} at {record.url}, "
                            f"since {record.started}); stop it first")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now (for a server of one's own, e.g. a benchmark's)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _check_port(host: str, port: int) -> None:
    # quack_serve binds with address reuse, so a taken port must be caught here
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
            raise StoreError(f"{host}:{port} {why}; pick another --port or --ip") from None


def _take_lock(engine: FileEngine, timeout_s: float) -> int:
    engine.path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(engine.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            _refuse_if_running(engine.path)
            if time.monotonic() > deadline:
                os.close(fd)
                raise StoreError(f"{engine.path}: another process held the store for over {timeout_s:.0f}s "
                                 f"(lock file {engine.lock_path}); cannot serve it") from None
            time.sleep(0.05)


class StoreServer:
    """A running store server; ``start()`` serves, ``stop()`` (or SIGTERM via the CLI) ends it."""

    def __init__(self, db: str | Path, *, host: str = "127.0.0.1", port: int = 9494,
                 lock_timeout_s: float = 60.0) -> None:
        self.engine = FileEngine(Path(db), lock_timeout_s=lock_timeout_s)
        self.db = self.engine.path
        self.host = host
        self.port = port
        self.lock_timeout_s = lock_timeout_s
        self.version = 0
        self.record: ServerRecord | None = None
        self._con: duckdb.DuckDBPyConnection | None = None
        self._lock_fd: int | None = None

    @property
    def url(self) -> str:
        return f"quack://{self.host}:{self.port}"

    def start(self) -> ServerRecord:
        """Lock, migrate, serve and publish; a ``StoreError`` (nothing left running) if any step fails."""
        from fibreflow.store.connection import apply_migrations

        _refuse_if_running(self.db)
        _check_port(self.host, self.port)
        self._lock_fd = _take_lock(self.engine, self.lock_timeout_s)
        try:
            self.engine._check_file()
            con = duckdb.connect()
            self._con = con
            load_extension(con, "httpfs")
            load_extension(con, "quack")
            try:
                quoted = str(self.db).replace("'", "''")
                con.execute(f"ATTACH '{quoted}' AS {SERVED_CATALOG}")
            except duckdb.Error as exc:
                raise StoreError(f"{self.db}: cannot open as DuckDB ({exc}); the file was left untouched") from None
            con.execute(f"USE {SERVED_CATALOG}")
            con.execute("SET TimeZone = 'UTC'")
            self.version = apply_migrations(con, str(self.db))
            con.execute("USE memory")  # sessions start in the empty default database (see quack.SERVED_CATALOG)
            token = server_token(self.db)
            options = "token := ?" + ("" if self.host in LOOPBACK else ", allow_other_hostname := true")
            try:
                con.execute(f"SELECT 1 FROM quack_serve(?, {options})", [f"quack:{self.host}:{self.port}", token])
            except duckdb.Error as exc:
                message = str(exc).replace(token, "***")
                raise StoreError(f"{self.url}: quack_serve failed: {message}") from None
            self.record = ServerRecord(pid=os.getpid(), host="127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host,
                                       port=self.port, started=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                       db=str(self.db), token_file=str(token_path(self.db)))
            write_record(self.record)
            return self.record
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop serving, remove the record, checkpoint and close the file, release its lock."""
        if self.record is not None:
            remove_record(self.db, self.record.pid)
        if self._con is not None:
            try:
                self._con.execute("SELECT 1 FROM quack_stop(?)", [f"quack:{self.host}:{self.port}"])
            except duckdb.Error:
                pass
            try:
                self._con.execute("CHECKPOINT")
            except duckdb.Error:
                pass
            self._con.close()
            self._con = None
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
        self.record = None

    def serve_until(self, stop: threading.Event, *, on_ready: Callable[[ServerRecord], None] | None = None) -> None:
        """``start()``, then serve until ``stop`` is set; always ``stop()`` at the end."""
        record = self.start()
        try:
            if on_ready is not None:
                on_ready(record)
            while not stop.wait(0.5):
                if self.record is not None and find_server(self.db) is None:
                    write_record(self.record)  # someone removed the record: publish it again
        finally:
            self.stop()
