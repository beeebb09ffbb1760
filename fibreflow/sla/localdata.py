"""A local data layer for the example SLAs: real sources on this machine, owned by fibreflow.

``LocalDataLayer`` builds what ``data/slas.example.yaml`` measures, without any production
system: tables in the real PostgreSQL (in a schema of their own, dropped on close), SQLite
and DuckDB files, folders of image files and an HTTP server on 127.0.0.1 standing in for
Convex, the VLM server and the QField webhook. ``env()`` gives the environment variables the
example file reads. Benchmarks, the demo and tests use it; it is a stand-in, not a monitor of
anything real.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fibreflow.errors import BenchmarkError

UTC = dt.UTC


class LocalHTTPSource:
    """An HTTP server on 127.0.0.1 answering configurable routes: JSON, a status, a delay.

    ``route(path, body=..., status=200, delay=0.0)``; a delay of ``float('inf')`` hangs the
    request until the server closes. Unknown paths answer 404.
    """

    def __init__(self) -> None:
        self.routes: dict[str, tuple[int, Any, float]] = {}
        self.hits: dict[str, int] = {}
        self._closing = threading.Event()
        source = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, with_body: bool) -> None:
                path = self.path.split("?", 1)[0]
                source.hits[path] = source.hits.get(path, 0) + 1
                status, body, delay = source.routes.get(path, (404, {"error": "no such route"}, 0.0))
                if delay:
                    source._closing.wait(None if delay == float("inf") else delay)
                data = json.dumps(body, default=str).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if with_body:
                        self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timed out) first

            def do_GET(self) -> None:  # noqa: N802
                self._answer(True)

            def do_HEAD(self) -> None:  # noqa: N802
                self._answer(False)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="fibreflow-local-http")
        self._thread.start()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:43121``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def route(self, path: str, body: Any = None, *, status: int = 200, delay: float = 0.0) -> None:
        """Answer ``GET path`` with ``body`` as JSON and ``status`` after ``delay`` seconds."""
        self.routes[path] = (status, {} if body is None else body, delay)

    def close(self) -> None:
        """Release hung requests and stop."""
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()


def _iso(ts: dt.datetime) -> str:
    return ts.astimezone(UTC).isoformat()


def _naive(ts: dt.datetime) -> str:
    """A UTC time written without zone, as many SQLite apps store it."""
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


class LocalDataLayer:
    """The example SLAs' sources under ``root`` plus a PostgreSQL schema; see the module doc."""

    def __init__(self, root: str | Path, *, pg_dsn: str) -> None:
        import psycopg

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.pg_dsn = pg_dsn
        self.schema = f"ff_local_{uuid.uuid4().hex[:10]}"
        try:
            with psycopg.connect(pg_dsn, connect_timeout=5, autocommit=True) as con:
                con.execute(f"CREATE SCHEMA {self.schema}")
                for table, cols in (("delivery_reports", "updated_at timestamptz"),
                                    ("vlm_jobs", "started_at timestamptz, finished_at timestamptz"),
                                    ("whatsapp_messages", "received_at timestamptz"),
                                    ("whatsapp_images", "uploaded_at timestamptz")):
                    con.execute(f"CREATE TABLE {self.schema}.{table} (id serial, {cols})")
        except psycopg.Error as exc:
            raise BenchmarkError(f"the local data layer needs PostgreSQL at {pg_dsn}: {exc}") from None
        sep = "&" if "?" in pg_dsn else "?"
        self.neon_url = f"{pg_dsn}{sep}options=-csearch_path%3D{self.schema}"
        self.http = LocalHTTPSource()
        self.vlm_dir = self.root / "vlm" / "images"
        self.media_dir = self.root / "whatsapp" / "media"
        for d in (self.vlm_dir, self.media_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.qfield_db = self.root / "qfield.db"
        self.bridge_db = self.root / "bridge.db"
        self.foto_db = self.root / "foto.duckdb"
        with sqlite3.connect(self.qfield_db) as con:
            con.execute("CREATE TABLE IF NOT EXISTS qfield_sync_log (synced_at TEXT)")
        with sqlite3.connect(self.bridge_db) as con:
            con.execute("CREATE TABLE IF NOT EXISTS messages (received_at TEXT)")
            con.execute("CREATE TABLE IF NOT EXISTS sessions (authenticated_at TEXT)")
        self._duckdb("CREATE TABLE IF NOT EXISTS foto_reviews (reviewed_at TIMESTAMP)")
        self.http.route("/vlm/health", {"status": "ok"})
        self.http.route("/qfield/webhook/health", {"status": "ok"})
        self.refresh()

    def env(self) -> dict[str, str]:
        """The environment variables ``data/slas.example.yaml`` reads, pointing here."""
        return {
            "NEON_DATABASE_URL": self.neon_url,
            "CONVEX_URL": f"{self.http.url}/convex",
            "VLM_URL": f"{self.http.url}/vlm",
            "VLM_IMAGE_DIR": str(self.vlm_dir),
            "QFIELD_DATABASE_URL": f"sqlite:///{self.qfield_db}",
            "QFIELD_WEBHOOK_URL": f"{self.http.url}/qfield/webhook/health",
            "WA_BRIDGE_DATABASE_URL": f"sqlite:///{self.bridge_db}",
            "WA_MEDIA_DIR": str(self.media_dir),
            "FOTO_REVIEWS_DATABASE_URL": f"duckdb:///{self.foto_db}",
        }

    def _pg(self, sql: str, params: list[Any] | None = None) -> None:
        import psycopg

        with psycopg.connect(self.neon_url, autocommit=True) as con:
            con.execute(sql, params or [])

    def _duckdb(self, sql: str, params: list[Any] | None = None) -> None:
        import duckdb

        # a source file, not the fibreflow store: written only between cycles
        with duckdb.connect(str(self.foto_db)) as con:
            con.execute(sql, params or [])

    def refresh(self, *, age_s: float = 5.0) -> None:
        """Make every source fresh: its newest event ``age_s`` seconds ago."""
        for name in SETTERS:
            self.set_age(name, age_s)
        ts = dt.datetime.now(UTC) - dt.timedelta(seconds=age_s)
        self._pg("INSERT INTO vlm_jobs (started_at, finished_at) VALUES (%s, %s)",
                 [ts - dt.timedelta(seconds=4), ts])

    def set_age(self, sla: str, age_s: float) -> None:
        """Make SLA ``sla`` read an age (or lag) of about ``age_s`` seconds."""
        try:
            setter = SETTERS[sla]
        except KeyError:
            raise BenchmarkError(f"no local source for {sla!r}; known: {', '.join(SETTERS)}") from None
        setter(self, dt.datetime.now(UTC) - dt.timedelta(seconds=age_s), age_s)

    def hang(self, path: str) -> None:
        """Make an HTTP route hang until close (e.g. ``/vlm/health``)."""
        status, body, _ = self.http.routes[path]
        self.http.route(path, body, status=status, delay=float("inf"))

    def close(self) -> None:
        """Stop the HTTP server and drop the PostgreSQL schema (files stay under root)."""
        import psycopg

        self.http.close()
        with psycopg.connect(self.pg_dsn, autocommit=True) as con:
            con.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")

    def __enter__(self) -> LocalDataLayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def touch_image(directory: Path, name: str, ts: dt.datetime) -> None:
    """Write image ``name`` in ``directory`` with modification time ``ts``, the newest there."""
    path = directory / name
    path.write_bytes(b"\xff\xd8\xff\xe0 local demo image")
    os.utime(path, (ts.timestamp(), ts.timestamp()))
    for other in directory.glob("*.jpg"):  # the newest file decides; keep older ones older
        if other != path and other.stat().st_mtime > ts.timestamp():
            os.utime(other, (ts.timestamp() - 1, ts.timestamp() - 1))


def _sqlite(db: Path, sql: str, value: str) -> None:
    with sqlite3.connect(db) as con:
        con.execute(sql.split(";")[0])
        con.execute(sql.split(";")[1], [value])


def _neon_and_convex(layer: LocalDataLayer, ts: dt.datetime, age_s: float) -> None:
    now = dt.datetime.now(UTC)
    layer._pg("DELETE FROM delivery_reports")
    layer._pg("INSERT INTO delivery_reports (updated_at) VALUES (%s)", [now])
    layer.http.route("/convex/api/latest", {"updated_at": _iso(now - dt.timedelta(seconds=age_s))})


def _delivery_reports(layer: LocalDataLayer, ts: dt.datetime, age_s: float) -> None:
    layer._pg("DELETE FROM delivery_reports")
    layer._pg("INSERT INTO delivery_reports (updated_at) VALUES (%s)", [ts])
    layer.http.route("/convex/api/latest", {"updated_at": _iso(ts)})


def _whatsapp_messages(layer: LocalDataLayer, ts: dt.datetime, age_s: float) -> None:
    now = dt.datetime.now(UTC)
    _sqlite(layer.bridge_db, "DELETE FROM messages; INSERT INTO messages VALUES (?)", _naive(now))
    layer._pg("DELETE FROM whatsapp_messages")
    layer._pg("INSERT INTO whatsapp_messages (received_at) VALUES (%s)", [now - dt.timedelta(seconds=age_s)])


def _whatsapp_images(layer: LocalDataLayer, ts: dt.datetime, age_s: float) -> None:
    now = dt.datetime.now(UTC)
    touch_image(layer.media_dir, "IMG-0001.jpg", now)
    layer._pg("DELETE FROM whatsapp_images")
    layer._pg("INSERT INTO whatsapp_images (uploaded_at) VALUES (%s)", [now - dt.timedelta(seconds=age_s)])


SETTERS = {
    "neon_to_convex_max_delay": _neon_and_convex,
    "delivery_reports_fresh": _delivery_reports,
    "vlm_image_max_age": lambda layer, ts, age: touch_image(layer.vlm_dir, "DR0001.jpg", ts),
    "qfield_sync_interval": lambda layer, ts, age: _sqlite(
        layer.qfield_db, "DELETE FROM qfield_sync_log; INSERT INTO qfield_sync_log VALUES (?)", _naive(ts)),
    "whatsapp_message_max_delay": _whatsapp_messages,
    "whatsapp_image_upload_max_time": _whatsapp_images,
    "whatsapp_session_max_age": lambda layer, ts, age: _sqlite(
        layer.bridge_db, "DELETE FROM sessions; INSERT INTO sessions VALUES (?)", _naive(ts)),
    "foto_reviews_max_age": lambda layer, ts, age: (
        layer._duckdb("DELETE FROM foto_reviews"),
        layer._duckdb("INSERT INTO foto_reviews VALUES (?)", [ts.replace(tzinfo=None)])),
}
"""SLA name -> how to make its source read a given age."""
