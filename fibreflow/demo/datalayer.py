"""The demo's own local data layer: a SQLite table, a folder of images and an HTTP endpoint.

It stands in for Neon (PostgreSQL), Convex and the VLM image store so the SLA monitor has
real sources to measure without any network or credentials. The demo can make it go stale
(the sync stops) and recover, so one SLA is violated and then resolves.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any


class DemoDataLayer:
    """Owns ``root``: ``delivery.sqlite``, ``images/DR*.jpg`` and a server on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db_path = root / "delivery.sqlite"
        self.images = root / "images"
        self._server: ThreadingHTTPServer | None = None
        self._convex_updated_at = dt.datetime.now(dt.UTC)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> DemoDataLayer:
        self.root.mkdir(parents=True, exist_ok=True)
        self.images.mkdir(exist_ok=True)
        with sqlite3.connect(self.db_path) as con:
            con.execute("CREATE TABLE IF NOT EXISTS delivery_reports "
                        "(id INTEGER PRIMARY KEY, site TEXT, updated_at TEXT NOT NULL)")
            con.execute("CREATE TABLE IF NOT EXISTS qfield_sync_events (id INTEGER PRIMARY KEY, at TEXT NOT NULL)")
        layer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.startswith("/api/latest"):
                    body: dict[str, Any] = {"updated_at": layer._convex_updated_at.isoformat()}
                elif self.path.startswith("/health"):
                    body = {"status": "ok"}
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, name="demo-datalayer", daemon=True).start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> DemoDataLayer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- what the SLA file refers to ----------------------------------------------------

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the demo data layer is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def environment(self) -> dict[str, str]:
        """The ``${VAR}`` values of ``data/demo/slas.demo.yaml``."""
        return {
            "DEMO_DELIVERY_DB": f"sqlite:///{self.db_path}",
            "DEMO_CONVEX_URL": self.url,
            "DEMO_IMAGE_DIR": str(self.images),
        }

    # -- moving the data ----------------------------------------------------------------

    def sync(self, *, age_s: float = 0.0) -> None:
        """A healthy pipeline: new delivery rows, Convex caught up, a new image, a sync event."""
        at = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age_s)
        with sqlite3.connect(self.db_path) as con:
            con.execute("INSERT INTO delivery_reports (site, updated_at) VALUES (?, ?)",
                        ("DR-demo", at.isoformat()))
            con.execute("INSERT INTO qfield_sync_events (at) VALUES (?)", (at.isoformat(),))
        self._convex_updated_at = at
        image = self.images / f"DR{int(at.timestamp())}.jpg"
        image.write_bytes(b"\xff\xd8\xff\xe0demo\xff\xd9")
        os.utime(image, (at.timestamp(), at.timestamp()))

    def stall(self, *, minutes: float = 15) -> None:
        """The Neon -> Convex sync stops: Neon moves on, Convex stays ``minutes`` behind."""
        now = dt.datetime.now(dt.UTC)
        with sqlite3.connect(self.db_path) as con:
            con.execute("INSERT INTO delivery_reports (site, updated_at) VALUES (?, ?)",
                        ("DR-demo", now.isoformat()))
        self._convex_updated_at = now - dt.timedelta(minutes=minutes)
