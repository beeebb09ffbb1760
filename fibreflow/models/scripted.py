"""The scripted model: a local HTTP server that speaks Anthropic's Messages API.

``POST /v1/messages`` answers like the real API (a ``message`` with ``text`` / ``tool_use``
content blocks, ``stop_reason``, ``usage`` with the cache fields) from a script of turns, and
fails like it too (``{"type": "error", "error": {...}}`` with ``retry-after``) when errors are
injected. The real ``anthropic`` SDK talks to it through ``base_url``: it is the test double of
every test and benchmark that involves a model, and the offline model of ``fibreflow demo``.

A script (YAML or JSON)::

    latency_s: 0.0                 # per request (a turn may set its own)
    errors:                        # injected failures, in request order
      - {status: 529, times: 2}    # the first 2 requests get 529 overloaded_error
      - {status: 429, retry_after: 0.5}
    turns:                         # replayed in order...
      - text: "Let me look."
        tool_use: {name: bash, input: {command: "ls"}}
      - match: "FAILED|Error"      # ...except turns with a regex on the last user message
        text: "Fixing the failure."
      - match: "^Implement"        # system_match: a regex the system prompt must also match
        system_match: "Known pitfalls"
        text: "Avoiding what failed before."
    default: {text: "Done."}       # when no turn is left

Run standalone: ``python -m fibreflow.models.scripted --script FILE --port 8765``.
The key (``x-api-key``, or ``Authorization: Bearer`` as newer SDKs send it) is checked for
presence, and equality when ``api_key`` is given, but never recorded.

The Models API is served too, as the preflight uses it: ``GET /v1/models`` lists the known model
IDs (``models``; default: every model of the pricing file) and ``GET /v1/models/{id}`` describes
one, answering an unknown ID with 404 ``not_found_error`` and a missing or wrong key with 401
``authentication_error``, as the API does. These requests are not counted in ``request_count``
(that counts Messages requests, whose script and injected errors they never consume).
"""

from __future__ import annotations

import argparse
import atexit
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fibreflow.errors import ConfigError
from fibreflow.models.scripted_replies import build_message, error_body, last_user_text
from fibreflow.testing.server import LocalServer, OwnedHandler
from fibreflow.yamlio import load_yaml

_TURN_KEYS = {"text", "tool_use", "content", "match", "system_match", "stop_reason", "usage", "latency_s"}
_STOP_REASONS = {"end_turn", "tool_use", "max_tokens", "stop_sequence", "pause_turn", "refusal"}
_HIDDEN_HEADERS = {"x-api-key", "authorization"}
SCRIPTED_NOTE = "scripted model (offline): replies come from a script, no real model was called"
__all__ = ["InjectedError", "RecordedRequest", "SCRIPTED_NOTE", "Script", "ScriptedServer", "Turn",
           "last_user_text", "main", "shared_server"]


@dataclass(frozen=True)
class Turn:
    """One scripted reply: its content blocks, optional regex, stop reason, usage and latency."""

    content: tuple[dict[str, Any], ...]
    match: re.Pattern[str] | None = None
    stop_reason: str | None = None
    usage: dict[str, Any] | None = None
    latency_s: float | None = None
    system_match: re.Pattern[str] | None = None


@dataclass(frozen=True)
class InjectedError:
    """Answer ``times`` requests with ``status`` (or the requests numbered in ``at``, from 1)."""

    status: int
    times: int = 1
    retry_after: float | None = None
    message: str | None = None
    at: tuple[int, ...] = ()


@dataclass
class Script:
    """Turns replayed in order or by regex, a default reply, injected errors and latency."""

    turns: list[Turn] = field(default_factory=list)
    default: Turn | None = None
    errors: list[InjectedError] = field(default_factory=list)
    latency_s: float = 0.0

    @classmethod
    def load(cls, path: str | Path) -> Script:
        """Read a YAML or JSON script; a bad entry is a ConfigError naming the file and line."""
        loaded = load_yaml(path)
        return cls.from_data(loaded.data or {}, where=loaded)

    @classmethod
    def from_data(cls, data: dict[str, Any] | list[Any], *, where: Any = None) -> Script:
        """Build from parsed data (a list is taken as the turns)."""

        def fail(msg: str, keys: list[Any]) -> ConfigError:
            return where.error(msg, keys) if where is not None else ConfigError(msg, key=".".join(map(str, keys)))

        if isinstance(data, list):
            data = {"turns": data}
        if not isinstance(data, dict):
            raise fail("a script is a mapping (turns, default, errors, latency_s) or a list of turns", [])
        unknown = sorted(set(data) - {"turns", "default", "errors", "latency_s"})
        if unknown:
            raise fail(f"unknown key '{unknown[0]}' (known: turns, default, errors, latency_s)", [unknown[0]])
        turns = [_turn(t, ["turns", i], fail) for i, t in enumerate(data.get("turns") or [])]
        default = _turn(data["default"], ["default"], fail) if data.get("default") is not None else None
        errors = []
        for i, e in enumerate(data.get("errors") or []):
            if not isinstance(e, dict) or not isinstance(e.get("status"), int):
                raise fail("an error needs an integer status, e.g. {status: 529, times: 2}", ["errors", i])
            at = e.get("at") or []
            errors.append(InjectedError(status=e["status"], times=int(e.get("times", 1)),
                                        retry_after=e.get("retry_after"), message=e.get("message"),
                                        at=tuple(int(n) for n in (at if isinstance(at, list | tuple) else [at]))))
        return cls(turns=turns, default=default, errors=errors, latency_s=float(data.get("latency_s") or 0))


def _turn(spec: Any, keys: list[Any], fail: Any) -> Turn:
    if isinstance(spec, str):
        spec = {"text": spec}
    if not isinstance(spec, dict):
        raise fail("a turn is a mapping (text, tool_use, content, match, stop_reason, usage, latency_s)", keys)
    unknown = sorted(set(spec) - _TURN_KEYS)
    if unknown:
        raise fail(f"unknown turn key '{unknown[0]}' (known: {', '.join(sorted(_TURN_KEYS))})", [*keys, unknown[0]])
    blocks: list[dict[str, Any]] = []
    if "content" in spec:
        blocks = [dict(b) for b in spec["content"]]
    if spec.get("text") is not None:
        blocks.append({"type": "text", "text": str(spec["text"])})
    uses = spec.get("tool_use") or []
    for use in uses if isinstance(uses, list) else [uses]:
        if not isinstance(use, dict) or "name" not in use:
            raise fail("tool_use needs a name and an input mapping", [*keys, "tool_use"])
        blocks.append({"type": "tool_use", "name": use["name"], "input": use.get("input", {}),
                       **({"id": use["id"]} if "id" in use else {})})
    stop = spec.get("stop_reason")
    if stop is not None and stop not in _STOP_REASONS:
        raise fail(f"stop_reason {stop!r} is not one of {', '.join(sorted(_STOP_REASONS))}", [*keys, "stop_reason"])
    patterns: dict[str, re.Pattern[str] | None] = {}
    for key in ("match", "system_match"):
        try:
            patterns[key] = re.compile(spec[key]) if spec.get(key) else None
        except re.error as exc:
            raise fail(f"{key} is not a valid regex: {exc}", [*keys, key]) from None
    if patterns["system_match"] is not None and patterns["match"] is None:
        raise fail("system_match needs a match as well", [*keys, "system_match"])
    return Turn(tuple(blocks), patterns["match"], stop, spec.get("usage"), spec.get("latency_s"),
                patterns["system_match"])


@dataclass(frozen=True)
class RecordedRequest:
    """A request as the server saw it (headers without the key)."""

    number: int
    path: str
    status: int
    model: str | None
    body: dict[str, Any] | None
    headers: dict[str, str]


class ScriptedServer(LocalServer):
    """Context manager serving the scripted Messages API on 127.0.0.1 (ephemeral port by default)."""

    thread_name = "scripted-model"

    def __init__(self, script: Script | dict[str, Any] | list[Any] | str | Path | None = None, *,
                 latency_s: float | None = None, api_key: str | None = None, port: int = 0,
                 models: list[str] | None = None) -> None:
        if isinstance(script, str | Path):
            script = Script.load(script)
        elif isinstance(script, dict | list):
            script = Script.from_data(script)
        self.script = script or Script()
        self.latency_s = self.script.latency_s if latency_s is None else latency_s
        self.api_key = api_key
        self.models = list(models) if models is not None else _priced_models()
        """Model IDs the Models API knows (a Messages request names any)."""
        super().__init__(port=port)
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._next_turn = 0
        self._failures: list[InjectedError] = [e for e in self.script.errors if not e.at]
        self._fail_at = {n: e for e in self.script.errors for n in e.at}
        self._count = 0

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` for ``anthropic.Anthropic(base_url=...)``."""
        return self.url

    @property
    def request_count(self) -> int:
        """Requests received so far, failed ones included."""
        with self._lock:
            return self._count

    def fail_next(self, n: int = 1, *, status: int = 529, retry_after: float | None = None) -> None:
        """Answer the next ``n`` requests with ``status`` and the API's error body."""
        with self._lock:
            self._failures.append(InjectedError(status=status, times=n, retry_after=retry_after))

    # -- used by the handler ------------------------------------------------------------

    def _admit(self) -> tuple[int, InjectedError | None]:
        with self._lock:
            self._count += 1
            n = self._count
            if n in self._fail_at:
                return n, self._fail_at[n]
            if self._failures:
                head = self._failures[0]
                self._failures[0] = InjectedError(head.status, head.times - 1, head.retry_after, head.message)
                if head.times <= 1:
                    self._failures.pop(0)
                return n, head
            return n, None

    def _pick(self, text: str, system: str = "") -> Turn | None:
        with self._lock:
            for turn in self.script.turns:
                if turn.match is not None and turn.match.search(text) and \
                        (turn.system_match is None or turn.system_match.search(system)):
                    return turn
            while self._next_turn < len(self.script.turns):
                turn = self.script.turns[self._next_turn]
                self._next_turn += 1
                if turn.match is None:
                    return turn
            return self.script.default

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)


class _Handler(OwnedHandler):
    owner: ScriptedServer

    def _key(self) -> str:
        # SDK versions differ: x-api-key, or the key as an Authorization bearer token
        bearer = self.headers.get("authorization") or ""
        return self.headers.get("x-api-key") or bearer.removeprefix("Bearer ").strip()

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].rstrip("/")
        known = self.owner.models
        if not path.startswith("/v1/models"):
            status, payload = 404, error_body(404, f"{path} is not served by the scripted model")
        elif not self._key() or (self.owner.api_key and self._key() != self.owner.api_key):
            status, payload = 401, error_body(401, "invalid x-api-key")
        elif path == "/v1/models":
            data = [_model_info(m) for m in known]
            status, payload = 200, {"data": data, "has_more": False, "first_id": known[0] if known else None,
                                    "last_id": known[-1] if known else None}
        else:
            model = path.removeprefix("/v1/models/")
            status, payload = (200, _model_info(model)) if model in known else \
                (404, error_body(404, f"model: {model}"))
        self.owner._record(RecordedRequest(0, path, status, None, None, {
            k.lower(): v for k, v in self.headers.items() if k.lower() not in _HIDDEN_HEADERS}))
        self._answer(status, payload, {})

    def _answer(self, status: int, payload: Any, extra: dict[str, str], number: int = 0) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("request-id", f"req_scripted_{number:06d}")
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout): nothing to answer

    def do_POST(self) -> None:  # noqa: N802
        owner = self.owner
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        number, failure = owner._admit()
        headers = {k.lower(): v for k, v in self.headers.items() if k.lower() not in _HIDDEN_HEADERS}
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        path = self.path.split("?", 1)[0]
        status, payload, extra, delay = 200, None, {}, owner.latency_s
        if path != "/v1/messages":
            status, payload = 404, error_body(404, f"{path} is not served by the scripted model")
        elif not self._key() or (owner.api_key and self._key() != owner.api_key):
            status, payload = 401, error_body(401, "invalid x-api-key")
        elif failure is not None:
            status = failure.status
            payload = error_body(status, failure.message)
            if failure.retry_after is not None:
                extra["retry-after"] = f"{failure.retry_after:g}"
        else:
            status, payload, turn_delay = build_message(body, owner, number)
            if turn_delay is not None:
                delay = turn_delay
        model = body.get("model") if isinstance(body, dict) else None
        owner._record(RecordedRequest(number, path, status, model, body if isinstance(body, dict) else None, headers))
        if delay and owner._stop.wait(delay):
            return  # shutting down: drop the request as a dead server would
        self._answer(status, payload, extra, number)


def _model_info(model: str) -> dict[str, Any]:
    """The Models API's description of one model."""
    line = next((t for t in ("haiku", "sonnet", "opus") if t in model), None)
    return {"type": "model", "id": model, "display_name": model.replace("-", " ").title(),
            "created_at": "2026-01-01T00:00:00Z", "lifecycle": "active", **({"line": line} if line else {})}


def _priced_models() -> list[str]:
    """Every model ID of the configured pricing file, aliases included."""
    from fibreflow.models.pricing import Pricing

    try:
        pricing = Pricing.load()
    except ConfigError:
        return []
    return sorted({*pricing.models, *pricing.aliases})


ScriptedServer.handler = _Handler

_shared: ScriptedServer | None = None
_shared_lock = threading.Lock()


def shared_server() -> ScriptedServer:
    """The process-wide scripted server with the default offline script, started on first use."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = ScriptedServer(Script(default=Turn(({"type": "text", "text": SCRIPTED_NOTE},)))).start()
            atexit.register(_shared.close)
        return _shared


def main(argv: list[str] | None = None) -> int:
    """``python -m fibreflow.models.scripted --script FILE --port N``: serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m fibreflow.models.scripted", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--script", type=Path, help="YAML or JSON script (default: one default reply)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--latency", type=float, default=None, help="seconds before each answer")
    args = parser.parse_args(argv)
    try:
        script = Script.load(args.script) if args.script else None
    except ConfigError as exc:
        print(f"scripted: error: {exc}")
        return 2
    server = ScriptedServer(script, latency_s=args.latency, port=args.port).start()
    print(f"scripted Messages API on {server.base_url} (POST /v1/messages); Ctrl-C to stop", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
