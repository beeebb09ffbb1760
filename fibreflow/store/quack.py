"""``QuackEngine``: the store served by ``fibreflow store serve``, over DuckDB's Quack protocol."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import cast

import duckdb

from fibreflow.errors import StoreError, StoreUnreachable
from fibreflow.store.discovery import TOKEN_ENV

SERVED_CATALOG = "fibreflow_store"
"""The name a store server attaches its file under (its default database stays empty, so clients
attach it whatever the file's tables hold)."""


class QuackEngine:
    """A store server (``fibreflow store serve``) reached over DuckDB's Quack protocol.

    One in-memory client database per engine holds the server's token (a scoped secret) and a
    pool of attachments, one server session each; a unit of work borrows one, and every
    statement runs whole on the server (``remote.RemoteConnection``). A lost connection drops the
    attachment and is reported as a ``StoreError`` naming the URL, never the token.
    """

    mode = "quack"
    supports_constraints = True

    def __init__(self, host: str, port: int, *, token: str | None = None, lock_timeout_s: float = 60.0,
                 via: str | None = None) -> None:
        self.host = host
        self.port = port
        self.url = f"quack://{host}:{port}"
        self.lock_timeout_s = lock_timeout_s
        self._token = token
        self._via = via
        self._client: duckdb.DuckDBPyConnection | None = None
        self._free: list[str] = []
        self._serial = 0
        self._lock = threading.Lock()

    def _where(self) -> str:
        return f"{self.url} ({self._via})" if self._via else self.url

    def _why(self, exc: BaseException) -> str:
        text = str(exc).replace(self._token, "***") if self._token else str(exc)
        first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
        if "Authentication failed" in text or "authentication token" in text:
            return f"the server refused the token (wrong {TOKEN_ENV}?)"
        if any(m in text for m in ("Could not establish connection", "Connection refused", "HTTP", "connection id")):
            return f"no store server answers there (is `fibreflow store serve` running?): {first}"
        return first

    def _client_db(self) -> duckdb.DuckDBPyConnection:
        if self._client is not None:
            return self._client
        from fibreflow.store.extensions import load_extension

        token = self._token or os.environ.get(TOKEN_ENV)
        if not token:
            raise StoreUnreachable(f"{self.url}: no token for the store server; set {TOKEN_ENV}")
        self._token = token
        client = duckdb.connect()
        try:
            load_extension(client, "httpfs")
            load_extension(client, "quack")
            quoted = token.replace("'", "''")
            client.execute(f"CREATE SECRET fibreflow_quack (TYPE quack, TOKEN '{quoted}', "
                           f"SCOPE 'quack:{self.host}:{self.port}')")
            client.execute("SET TimeZone = 'UTC'")
        except StoreError:
            client.close()
            raise
        except duckdb.Error as exc:
            client.close()
            raise StoreUnreachable(f"{self._where()}: cannot prepare the store client: {self._why(exc)}") from None
        self._client = client
        return client

    def _acquire(self) -> tuple[duckdb.DuckDBPyConnection, str]:
        with self._lock:
            client = self._client_db()
            if self._free:
                return client, self._free.pop()
            self._serial += 1
            alias = f"fibreflow_server_{self._serial}"
            try:
                client.execute(f"ATTACH 'quack:{self.host}:{self.port}' AS {alias} (TYPE quack)")
            except duckdb.Error as exc:
                raise StoreUnreachable(f"{self._where()}: cannot attach the store server: {self._why(exc)}") from None
        try:
            with self._lock:
                cur = client.cursor()
            try:
                for statement in (f"USE {SERVED_CATALOG}", "SET TimeZone = 'UTC'"):
                    cur.execute(f"SELECT * FROM {alias}.query(?)", [statement])
            finally:
                cur.close()
        except duckdb.Error as exc:
            self._drop(alias)
            raise StoreUnreachable(f"{self._where()}: the store server did not take the session: {self._why(exc)}") from None
        return client, alias

    def _drop(self, alias: str) -> None:
        with self._lock:
            if self._client is not None:
                try:
                    self._client.execute(f"DETACH {alias}")
                except duckdb.Error:
                    pass

    @contextmanager
    def connect(self, *, write: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        from fibreflow.store.remote import RemoteConnection

        client, alias = self._acquire()
        with self._lock:  # the client's base connection is not shared across threads unguarded
            cur = client.cursor()
        remote = RemoteConnection(cur, alias)
        healthy = True
        try:
            yield cast(duckdb.DuckDBPyConnection, remote)
        except (duckdb.IOException, duckdb.HTTPException) as exc:
            healthy = False
            raise StoreError(f"{self._where()}: lost the store server during a "
                             f"{'write' if write else 'read'}: {self._why(exc)}") from None
        except duckdb.InvalidInputException as exc:
            if "connection id" in str(exc) or "Authentication" in str(exc):
                healthy = False
                raise StoreUnreachable(f"{self._where()}: the store server restarted or refused the session: "
                                 f"{self._why(exc)}") from None
            raise
        finally:
            if healthy and remote.in_transaction:
                try:
                    remote.execute("ROLLBACK")
                except duckdb.Error:
                    healthy = False
            cur.close()
            if healthy:
                with self._lock:
                    self._free.append(alias)
            else:  # the server went away: every pooled session is as dead as this one
                with self._lock:
                    stale, self._free = self._free, []
                for name in (alias, *stale):
                    self._drop(name)

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
            self._free = []
        if client is not None:
            try:
                client.close()
            except duckdb.Error:
                pass


_shared: dict[tuple[str, int, str | None], QuackEngine] = {}
_shared_guard = threading.Lock()


def shared_engine(host: str, port: int, *, token: str | None = None, lock_timeout_s: float = 60.0,
                  via: str | None = None) -> QuackEngine:
    """The process's one engine for a server (its client database loads two extensions, ~0.4 s:
    every ``Store`` of the same server shares it)."""
    key = (host, port, token)
    with _shared_guard:
        engine = _shared.get(key)
        if engine is None:
            engine = _shared[key] = QuackEngine(host, port, token=token, lock_timeout_s=lock_timeout_s, via=via)
        return engine

