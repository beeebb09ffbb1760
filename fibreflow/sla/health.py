"""The ``GET /health`` endpoint of ``fibreflow sla watch``.

It answers the last finished cycle as JSON::

    {"status": "ok" | "failing" | "starting", "cycle_id": ..., "checked_at": ..., "cycles": N,
     "checks": [{"name", "status", "value", "threshold", "reason", "duration_s"}, ...]}

with HTTP 200 when every check of that cycle is ``ok`` or ``warn``, and 503 when any is
``violation`` or ``error`` or no cycle has finished yet (``starting``), so a load balancer or
uptime probe can use the status code alone. Any other path is 404.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HEALTHY = frozenset({"ok", "warn"})


def health_document(results: list[Any] | None, *, cycle_id: str | None, cycles: int) -> dict[str, Any]:
    """The JSON body for the last cycle's results (None before the first cycle)."""
    if results is None:
        return {"status": "starting", "cycle_id": None, "checked_at": None, "cycles": cycles, "checks": []}
    failing = any(r.status not in HEALTHY for r in results)
    checked_at = min((r.checked_at for r in results), default=None)
    return {
        "status": "failing" if failing else "ok",
        "cycle_id": cycle_id,
        "checked_at": checked_at.isoformat() if checked_at else None,
        "cycles": cycles,
        "checks": [{**r.to_dict(), "duration_s": round(r.duration_s, 4)} for r in results],
    }


class HealthServer:
    """A tiny HTTP server on ``host:port`` (port 0 picks a free one) in a daemon thread."""

    def __init__(self, document: Callable[[], dict[str, Any]], *, port: int, host: str = "127.0.0.1") -> None:
        get_document = document

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                if self.path.split("?", 1)[0].rstrip("/") != "/health":
                    self._send(404, {"error": "not found; try GET /health"})
                    return
                doc = get_document()
                self._send(200 if doc["status"] == "ok" else 503, doc)

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body, default=str).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # probes every few seconds would flood the watcher's output

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fibreflow-sla-health",
                                        daemon=True)
        self._thread.start()

    @property
    def address(self) -> tuple[str, int]:
        """The (host, port) it listens on."""
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
