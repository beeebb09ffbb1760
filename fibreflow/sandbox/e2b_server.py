"""An E2B-protocol server whose sandboxes are this host's bubblewrap sandboxes (``fibreflow sandbox serve``).

One port answers both halves of what the ``e2b`` SDK sends, told apart the way E2B's edge does:
a request carrying ``E2b-Sandbox-Id`` is sandbox traffic (envd: ``/health``, ``/files``, the
``process.Process`` and ``filesystem.Filesystem`` Connect services, served by the SDK's own
generated WSGI applications), anything else is the REST API (create, list, get, connect, set
timeout, kill), answered with the SDK's own models. Point the SDK at it with ``api_url`` and
``sandbox_url`` (``E2B_API_URL`` / ``E2B_SANDBOX_URL``) both set to the server's URL, or, behind
a TLS proxy with a wildcard certificate, with ``domain`` (``E2B_DOMAIN``): ``api.DOMAIN`` and
``49983-ID.DOMAIN`` then reach the same port.

The REST API wants ``X-API-Key`` equal to the key the server was given (from an environment
variable, never a flag); sandbox traffic wants the per-sandbox envd access token the create
answer carried (``X-Access-Token``). Unknown or dead sandboxes get the cloud's answers: 404
from the API, 502 "was not found" from the sandbox side. HTTP only: put TLS in front.
"""

from __future__ import annotations

import hmac
import io
import json
import re
import sys
import urllib.parse
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from e2b.api.client.models import (
    ConnectSandboxV2,
    ListedSandbox,
    NewSandboxV2,
    SandboxDetail,
    SandboxState,
    SandboxTimeoutRequest,
)
from e2b.api.client.models import Sandbox as SandboxModel
from e2b.api.client.types import Unset
from e2b.envd.filesystem.filesystem_connect import FilesystemWSGIApplication
from e2b.envd.process.process_connect import ProcessWSGIApplication

from fibreflow.errors import SandboxError
from fibreflow.sandbox.e2b_envd import FilesystemService, ProcessService, read_file, write_files
from fibreflow.sandbox.e2b_pool import ENVD_VERSION, SandboxGone, SandboxPool, ServedSandbox, TooManyRequests
from fibreflow.testing.server import LocalServer, OwnedHandler

CLIENT_ID = "fibreflow"
_ROUTE = re.compile(r"^/(?:v2/)?sandboxes(?:/(?P<id>[^/]+)(?:/(?P<action>[a-z]+))?)?$")
MAX_BODY = 1 << 30  # an upload of the repository is one request


class _Reply(Exception):
    """An early answer: status and JSON body (the cloud's ``{"code", "message"}`` shape)."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"code": status, "message": message, **extra}


class _Handler(OwnedHandler):
    owner: E2BServer
    disable_nagle_algorithm = True  # many small stream writes; each must leave at once

    def do_GET(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    def do_DELETE(self) -> None:
        self._dispatch()

    def do_PUT(self) -> None:
        self._dispatch()

    # -- plumbing --------------------------------------------------------------------------

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise _Reply(413, f"request body over {MAX_BODY} bytes")
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", content_type: str = "application/json",
              headers: Iterable[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        if status != 204:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 204:
            self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
        self._send(status, json.dumps(data).encode(), headers=headers)

    def _dispatch(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        try:
            body = self._body()
            sandbox_id = self.headers.get("E2b-Sandbox-Id")
            if sandbox_id is not None:
                self._envd(sandbox_id, url, body)
            else:
                self._api(url, body)
        except _Reply as reply:
            self._json(reply.status, reply.body, [("Retry-After", "0")] if reply.status == 429 else [])
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # an answer, not a dropped connection; the message names no secret
            print(f"fibreflow sandbox serve: {self.command} {url.path}: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            self._json(500, {"code": 500, "message": f"{type(exc).__name__}: {exc}"})

    # -- the REST API ----------------------------------------------------------------------

    def _api(self, url: urllib.parse.SplitResult, body: bytes) -> None:
        key = self.headers.get("X-API-Key") or ""
        if not hmac.compare_digest(key.encode(), self.owner.api_key.encode()):
            raise _Reply(401, "Invalid API key")
        match = _ROUTE.match(url.path)
        if match is None:
            raise _Reply(404, f"no such endpoint: {self.command} {url.path}")
        pool = self.owner.pool
        sandbox_id, action = match.group("id"), match.group("action")
        try:
            payload = json.loads(body) if body else {}
            if sandbox_id is None and self.command == "POST":
                new = NewSandboxV2.from_dict(payload)
                served = pool.create(template=new.template_id, timeout_s=_given(new.timeout),
                                     metadata=_given(new.metadata) or {}, envs=_given(new.env_vars) or {},
                                     allow_internet_access=_given(new.allow_internet_access))
                return self._json(201, _created(served))
            if sandbox_id is None and self.command == "GET":
                return self._list(urllib.parse.parse_qs(url.query))
            if sandbox_id is None:
                raise _Reply(405, f"{self.command} {url.path} is not allowed")
            if action is None and self.command == "GET":
                return self._json(200, _detail(pool.get(sandbox_id)))
            if action is None and self.command == "DELETE":
                if not pool.kill(sandbox_id):
                    raise _Reply(404, f"sandbox {sandbox_id!r} doesn't exist or you don't have access to it")
                return self._send(204)
            if action == "timeout" and self.command == "POST":
                pool.set_timeout(sandbox_id, SandboxTimeoutRequest.from_dict(payload).timeout)
                return self._send(204)
            if action == "connect" and self.command == "POST":
                timeout = _given(ConnectSandboxV2.from_dict(payload).timeout)
                return self._json(200, _created(pool.extend(sandbox_id, timeout or 300)))
            if action == "refreshes" and self.command == "POST":
                pool.get(sandbox_id)
                return self._send(204)
        except SandboxGone as exc:
            raise _Reply(404, str(exc)) from None
        except TooManyRequests:
            raise _Reply(429, "Rate limit exceeded, please try again later.") from None
        except (SandboxError, KeyError, TypeError, ValueError) as exc:
            raise _Reply(400, str(exc)) from None
        raise _Reply(404, f"no such endpoint: {self.command} {url.path}")

    def _list(self, query: dict[str, list[str]]) -> None:
        wanted = dict(urllib.parse.parse_qsl(query.get("metadata", [""])[0]))
        wanted = {urllib.parse.unquote(k): urllib.parse.unquote(v) for k, v in wanted.items()}
        states = ",".join(query.get("state", [])).split(",")
        boxes = [b for b in self.owner.pool.running()
                 if all(b.metadata.get(k) == v for k, v in wanted.items())
                 and (states == [""] or SandboxState.RUNNING.value in states)]
        if query.get("order", ["asc"])[0] == "desc":
            boxes.reverse()
        start = int(query.get("nextToken", ["0"])[0] or 0)
        limit = max(1, int(query.get("limit", ["100"])[0]))
        page = boxes[start:start + limit]
        headers = [("x-next-token", str(start + limit))] if start + limit < len(boxes) else []
        self._json(200, [_listed(b) for b in page], headers)

    # -- sandbox traffic (envd) ------------------------------------------------------------

    def _envd(self, sandbox_id: str, url: urllib.parse.SplitResult, body: bytes) -> None:
        try:
            served = self.owner.pool.get(sandbox_id)
        except SandboxGone:
            raise _Reply(502, f"The sandbox {sandbox_id} was not found", sandboxId=sandbox_id) from None
        token = self.headers.get("X-Access-Token") or ""
        if not hmac.compare_digest(token.encode(), served.access_token.encode()):
            raise _Reply(401, "invalid or missing envd access token (X-Access-Token)")
        if url.path == "/health":
            return self._send(204)
        if url.path == "/files":
            return self._files(served, url, body)
        for prefix, app in self.owner.envd_apps.items():
            if url.path.startswith(prefix):
                return self._wsgi(app, url, body)
        raise _Reply(404, f"no such envd endpoint: {url.path}")

    def _files(self, served: ServedSandbox, url: urllib.parse.SplitResult, body: bytes) -> None:
        params = dict(urllib.parse.parse_qsl(url.query))
        try:
            if self.command == "GET":
                data = read_file(served, params.get("path", ""))
                return self._send(200, data, "application/octet-stream")
            if self.command == "POST":
                written = write_files(served, self.headers.get("Content-Type", ""), body, params.get("path"))
                return self._json(200, written)
        except FileNotFoundError:
            raise _Reply(404, f"file '{params.get('path', '')}' not found") from None
        except SandboxError as exc:
            status = 507 if "disk limit" in str(exc) else 400
            raise _Reply(status, str(exc)) from None
        raise _Reply(405, f"{self.command} /files is not allowed")

    def _wsgi(self, app: Callable[..., Iterable[bytes]], url: urllib.parse.SplitResult, body: bytes) -> None:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.command, "SCRIPT_NAME": "", "PATH_INFO": url.path, "QUERY_STRING": url.query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
            "SERVER_PROTOCOL": self.request_version, "REMOTE_ADDR": self.client_address[0],
            "REMOTE_PORT": str(self.client_address[1]), "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http", "wsgi.version": (1, 0)}
        for key, value in self.headers.items():
            if key.lower() not in ("content-type", "content-length"):
                environ["HTTP_" + key.upper().replace("-", "_")] = value
        started: list[tuple[str, list[tuple[str, str]]]] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            started.append((status, headers))
            return None

        result = app(environ, start_response)
        try:
            if isinstance(result, list):  # unary: one body of known length
                data = b"".join(result)
                status, headers = started[-1]
                headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
                return self._send(int(status.split()[0]), data, _header(headers, "content-type"), headers)
            sent = False
            for chunk in result:
                if not sent:
                    self._stream_headers(*started[-1])
                    sent = True
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            if not sent:
                self._stream_headers(*started[-1])
            self.wfile.write(b"0\r\n\r\n")
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()

    def _stream_headers(self, status: str, headers: list[tuple[str, str]]) -> None:
        self.send_response(int(status.split()[0]))
        for key, value in headers:
            if key.lower() != "content-length":
                self.send_header(key, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()


def _header(headers: list[tuple[str, str]], name: str) -> str:
    return next((v for k, v in headers if k.lower() == name), "application/octet-stream")


def _given(value: Any) -> Any:
    return None if isinstance(value, Unset) else value


def _created(served: ServedSandbox) -> dict[str, Any]:
    return SandboxModel(template_id=served.template, sandbox_id=served.sandbox_id, client_id=CLIENT_ID,
                        envd_version=ENVD_VERSION, alias=served.template,
                        envd_access_token=served.access_token).to_dict()


def _sizes(served: ServedSandbox) -> dict[str, Any]:
    profile = served.box.profile
    return {"cpu_count": served.cpu_count, "memory_mb": profile.memory_mb, "disk_size_mb": profile.disk_mb}


def _detail(served: ServedSandbox) -> dict[str, Any]:
    return SandboxDetail(template_id=served.template, sandbox_id=served.sandbox_id, client_id=CLIENT_ID,
                         started_at=served.started_at, end_at=served.end_at, envd_version=ENVD_VERSION,
                         state=SandboxState.RUNNING, alias=served.template, metadata=served.metadata,
                         allow_internet_access=served.allow_internet_access, **_sizes(served)).to_dict()


def _listed(served: ServedSandbox) -> dict[str, Any]:
    return ListedSandbox(template_id=served.template, sandbox_id=served.sandbox_id, client_id=CLIENT_ID,
                         started_at=served.started_at, end_at=served.end_at, state=SandboxState.RUNNING,
                         envd_version=ENVD_VERSION, alias=served.template, metadata=served.metadata,
                         **_sizes(served)).to_dict()


class E2BServer(LocalServer):
    """The server: a ``SandboxPool`` behind HTTP. ``api_key`` is what clients must send."""

    handler: ClassVar[type[OwnedHandler]] = _Handler
    thread_name: ClassVar[str] = "e2b-server"

    def __init__(self, pool: SandboxPool, *, api_key: str, port: int = 0, host: str = "127.0.0.1") -> None:
        if not api_key:
            raise SandboxError("the E2B server needs an API key for its clients")
        super().__init__(port=port, host=host)
        self.pool = pool
        self.api_key = api_key
        self.envd_apps: dict[str, Callable[..., Iterable[bytes]]] = {
            "/process.Process/": ProcessWSGIApplication(ProcessService(pool)),
            "/filesystem.Filesystem/": FilesystemWSGIApplication(FilesystemService(pool)),
        }

    def close(self) -> None:
        """Stop serving, then kill every sandbox."""
        super().close()
        self.pool.close()


__all__ = ["E2BServer"]
