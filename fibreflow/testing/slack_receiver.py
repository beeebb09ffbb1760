"""A local Slack: an HTTP server on 127.0.0.1 that speaks the two protocols fibreflow posts with.

* Incoming webhooks: ``POST`` a JSON body (``text`` and/or ``blocks``) to any path outside
  ``/api/`` (``webhook_url`` looks like Slack's ``/services/T…/B…/…``); answers ``ok``. Generic
  JSON webhooks (fibreflow's ``webhook`` action) land here too.
* Web API ``POST /api/chat.postMessage`` (form or JSON body, ``Authorization: Bearer`` or a
  ``token`` field); answers ``{"ok": true, "channel", "ts", "message"}`` or Slack's error shape
  (``not_authed``, ``invalid_auth``, ``channel_not_found``, ``no_text``).
* Web API ``POST /api/chat.update`` (the same, plus ``ts`` of the message to replace; without
  one: ``message_not_found``), as the approvals server updates an approval message.
* Web API ``POST /api/auth.test``: whether the token is accepted (the build's preflight).
* A ``response_url`` (any path outside ``/api/``, like a webhook): ``response_url_for(name)``.

Every accepted message is recorded with its receive time; ``fail_next(n, status=429,
retry_after=1)`` makes the next ``n`` requests fail the way Slack does when rate limited or
down. Shipped in the package because the demo and the benchmarks use it as well as the tests.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from fibreflow.testing.server import LocalServer, OwnedHandler

WEBHOOK_PATH = "/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the receiver accepted."""

    kind: str  # "webhook" or "api"
    path: str
    text: str | None
    blocks: list[dict[str, Any]] | None
    channel: str | None
    body: dict[str, Any]
    headers: dict[str, str]
    received_at: dt.datetime
    received_monotonic: float = field(compare=False)


@dataclass(frozen=True)
class ReceivedRequest:
    """Any request, accepted or not, with the status it was answered with."""

    method: str
    path: str
    status: int
    received_at: dt.datetime


class SlackReceiver(LocalServer):
    """Context manager running the local Slack on an ephemeral port of 127.0.0.1."""

    thread_name = "slack-receiver"

    def __init__(self, *, token: str | None = None, delay_s: float = 0.0) -> None:
        """``token``: the only bot token accepted (any non-empty one if None); ``delay_s``: answer latency."""
        self.token = token
        self.delay_s = delay_s
        self.messages: list[ReceivedMessage] = []
        self.requests: list[ReceivedRequest] = []
        self._failures: list[tuple[int, float | None]] = []
        self._cond = threading.Condition()
        self._ts = 0
        super().__init__()

    # -- addresses ----------------------------------------------------------------------

    @property
    def webhook_url(self) -> str:
        """An incoming-webhook URL (set it as SLACK_WEBHOOK_URL)."""
        return self.url + WEBHOOK_PATH

    def response_url_for(self, name: str = "T0/1/abc") -> str:
        """A ``response_url`` as Slack puts in an interactivity payload (posts land as ``webhook``)."""
        return f"{self.url}/actions/{name}"

    @property
    def api_base_url(self) -> str:
        """The Web API base URL for ``slack_sdk.WebClient(base_url=...)``."""
        return self.url + "/api/"

    # -- control ------------------------------------------------------------------------

    def fail_next(self, n: int = 1, *, status: int = 429, retry_after: float | None = 1) -> None:
        """Answer the next ``n`` requests with ``status`` (429 carries ``Retry-After``)."""
        with self._cond:
            self._failures.extend([(status, retry_after)] * n)

    def wait_for(self, n: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """Wait until at least ``n`` messages arrived; returns them, or raises TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"received {len(self.messages)} of {n} Slack messages in {timeout}s")
                self._cond.wait(remaining)
            return list(self.messages)

    def clear(self) -> None:
        """Forget received messages and requests."""
        with self._cond:
            self.messages.clear()
            self.requests.clear()

    # -- used by the handler ------------------------------------------------------------

    def _take_failure(self) -> tuple[int, float | None] | None:
        with self._cond:
            return self._failures.pop(0) if self._failures else None

    def _record(self, request: ReceivedRequest, message: ReceivedMessage | None) -> None:
        with self._cond:
            self.requests.append(request)
            if message is not None:
                self.messages.append(message)
            self._cond.notify_all()

    def _next_ts(self) -> str:
        with self._cond:
            self._ts += 1
            return f"{time.time():.0f}.{self._ts:06d}"


class _Handler(OwnedHandler):
    owner: SlackReceiver

    def do_GET(self) -> None:  # noqa: N802
        self._answer(404, "text/plain", b"not found")

    def do_POST(self) -> None:  # noqa: N802
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.owner.delay_s:
            time.sleep(self.owner.delay_s)
        path = self.path.split("?", 1)[0]
        failure = self.owner._take_failure()
        if failure is not None:
            status, retry_after = failure
            extra = {"Retry-After": str(int(retry_after))} if status == 429 and retry_after is not None else {}
            if status == 429 and path.startswith("/api/"):  # the Web API says so in JSON, webhooks in text
                self._answer(status, "application/json", b'{"ok": false, "error": "ratelimited"}', headers=extra)
            else:
                self._answer(status, "text/plain", b"rate_limited" if status == 429 else b"internal_error",
                             headers=extra)
            return
        if path.startswith("/api/"):
            self._api(path, raw)
        else:
            self._webhook(path, raw)

    def _webhook(self, path: str, raw: bytes) -> None:
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            self._answer(400, "text/plain", b"invalid_payload")
            return
        if not isinstance(body, dict):
            self._answer(400, "text/plain", b"invalid_payload")
            return
        if path.startswith("/services/") and not (body.get("text") or body.get("blocks")):
            self._answer(400, "text/plain", b"no_text")
            return
        self._accept("webhook", path, body, None)
        self._answer(200, "text/plain", b"ok")

    def _api(self, path: str, raw: bytes) -> None:
        method = path[len("/api/"):]
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self._json(200, {"ok": False, "error": "invalid_json"})
                return
        else:
            body = {k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()}
            for key in ("blocks", "attachments"):
                if isinstance(body.get(key), str):
                    body[key] = json.loads(body[key])
        auth = self.headers.get("Authorization", "")
        token = auth[len("Bearer "):] if auth.startswith("Bearer ") else body.pop("token", None)
        if method not in ("chat.postMessage", "chat.update", "auth.test"):
            self._json(404, {"ok": False, "error": "unknown_method"})
        elif not token:
            self._json(200, {"ok": False, "error": "not_authed"})
        elif self.owner.token is not None and token != self.owner.token:
            self._json(200, {"ok": False, "error": "invalid_auth"})
        elif method == "auth.test":  # the preflight's check that the bot token is accepted
            self._json(200, {"ok": True, "url": "https://fibreflow.slack.invalid/", "team": "fibreflow",
                             "user": "fibreflow-bot", "team_id": "T0FIBREFLOW", "user_id": "U0FIBREFLOW",
                             "bot_id": "B0FIBREFLOW"})
        elif not body.get("channel"):
            self._json(200, {"ok": False, "error": "channel_not_found"})
        elif not (body.get("text") or body.get("blocks")):
            self._json(200, {"ok": False, "error": "no_text"})
        elif method == "chat.update" and not body.get("ts"):
            self._json(200, {"ok": False, "error": "message_not_found"})
        else:
            ts = str(body["ts"]) if method == "chat.update" else self.owner._next_ts()
            self._accept("api", path, body, str(body["channel"]))
            message = {"type": "message", "text": body.get("text"), "ts": ts, "bot_id": "B0FIBREFLOW"}
            if body.get("blocks"):
                message["blocks"] = body["blocks"]
            self._json(200, {"ok": True, "channel": "C0FIBREFLOW", "ts": ts, "message": message})

    _pending_message: ReceivedMessage | None = None

    def _accept(self, kind: str, path: str, body: dict[str, Any], channel: str | None) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() != "authorization"}
        message = ReceivedMessage(kind=kind, path=path, text=body.get("text"), blocks=body.get("blocks"),
                                  channel=channel, body=body, headers=headers,
                                  received_at=dt.datetime.now(dt.UTC), received_monotonic=time.monotonic())
        self._pending_message = message

    def _json(self, status: int, obj: dict[str, Any]) -> None:
        self._answer(status, "application/json; charset=utf-8", json.dumps(obj).encode())

    def _answer(self, status: int, ctype: str, body: bytes,
                headers: dict[str, str] | None = None) -> None:
        message, self._pending_message = self._pending_message, None
        # recorded before answering, so a client that got "ok" always finds its message
        self.owner._record(ReceivedRequest(self.command, self.path.split("?", 1)[0], status,
                                           dt.datetime.now(dt.UTC)), message)
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


SlackReceiver.handler = _Handler

__all__ = ["WEBHOOK_PATH", "ReceivedMessage", "ReceivedRequest", "SlackReceiver"]
