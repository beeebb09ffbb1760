"""The one local-server lifecycle every stand-in shares: HTTP on 127.0.0.1, served from a daemon thread.

A stand-in (the Slack receiver here, the scripted Messages API in ``fibreflow.models.scripted``)
subclasses ``LocalServer`` and names its request handler, a subclass of ``OwnedHandler`` whose
``owner`` is the running server. Binding port 0 takes a free port, so parallel tests never collide.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self


class OwnedHandler(BaseHTTPRequestHandler):
    """A request handler that knows the ``LocalServer`` it answers for, and keeps stderr quiet."""

    owner: Any  # narrowed by each stand-in's handler to its own server class
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - no stderr noise, no headers
        return


class LocalServer:
    """Start, stop and address an HTTP stand-in on 127.0.0.1; use it as a context manager."""

    handler: ClassVar[type[OwnedHandler]]
    thread_name: ClassVar[str] = "local-server"

    def __init__(self, *, port: int = 0, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self._server: ThreadingHTTPServer | None = None
        # set on close, so handlers sleeping in an injected latency wake up and drop their request
        self._stop = threading.Event()

    def start(self) -> Self:
        """Bind ``host`` (127.0.0.1 unless given; a free port unless ``port`` was given) and serve in a
        daemon thread."""
        handler = type(f"{type(self).__name__}Handler", (self.handler,), {"owner": self})
        self._stop.clear()
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                         name=self.thread_name, daemon=True).start()
        return self

    def close(self) -> None:
        """Stop serving and release the port; requests still waiting are dropped."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        """``http://HOST:PORT`` of the running server."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running; use it as a context manager")
        host = self.host if ":" not in self.host else f"[{self.host}]"
        return f"http://{host}:{self._server.server_address[1]}"


__all__ = ["LocalServer", "OwnedHandler"]
