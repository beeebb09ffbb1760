"""The demo's own local data layer: a SQLite table, a folder of images and an HTTP endpoint.

It stands in for Neon (PostgreSQL), Convex and the VLM image store so the SLA monitor has
real sources to measure without any network or credentials. The demo can make it go stale
(the sync stops) and recover, so one SLA is violated and then resolves.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from types import TracebackType

from fibreflow.sla.localdata import LocalHTTPSource, touch_image


class DemoDataLayer:
    """Owns ``root``: ``delivery.sqlite``, ``images/DR*.jpg`` and a server on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db_path = root / "delivery.sqlite"
        self.images = root / "images"
        self._http: LocalHTTPSource | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> DemoDataLayer:
        self.root.mkdir(parents=True, exist_ok=True)
        self.images.mkdir(exist_ok=True)
        with sqlite3.connect(self.db_path) as con:
            con.execute("CREATE TABLE IF NOT EXISTS delivery_reports "
                        "(id INTEGER PRIMARY KEY, site TEXT, updated_at TEXT NOT NULL)")
            con.execute("CREATE TABLE IF NOT EXISTS qfield_sync_events (id INTEGER PRIMARY KEY, at TEXT NOT NULL)")
        self._http = LocalHTTPSource()
        self._http.route("/health", {"status": "ok"})
        self._set_convex(dt.datetime.now(dt.UTC))
        return self

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> DemoDataLayer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- what the SLA file refers to ----------------------------------------------------

    @property
    def url(self) -> str:
        if self._http is None:
            raise RuntimeError("the demo data layer is not started")
        return self._http.url

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
        self._set_convex(at)
        touch_image(self.images, f"DR{int(at.timestamp())}.jpg", at)

    def stall(self, *, minutes: float = 15) -> None:
        """The Neon -> Convex sync stops: Neon moves on, Convex stays ``minutes`` behind."""
        now = dt.datetime.now(dt.UTC)
        with sqlite3.connect(self.db_path) as con:
            con.execute("INSERT INTO delivery_reports (site, updated_at) VALUES (?, ?)",
                        ("DR-demo", now.isoformat()))
        self._set_convex(now - dt.timedelta(minutes=minutes))

    def _set_convex(self, at: dt.datetime) -> None:
        assert self._http is not None
        self._http.route("/api/latest", {"updated_at": at.isoformat()})
