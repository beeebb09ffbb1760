"""The one LLM client: routes, retries, prices and records every model call.

Wraps the official ``anthropic`` SDK with the SDK's own retries off (``max_retries=0``) so
every try is ours: 429, 529 (overloaded), other 5xx, timeouts and connection errors are
retried with exponential backoff and jitter, honouring ``retry-after``; each try is a row in
``llm_calls`` (tokens, dollars, latency, status), written in its own short transaction after
the HTTP call returns. Keys never reach the store; prompt text only with ``store_prompts``.
This module is the table's only writer (``insert_calls`` takes a sample history's rows).

A call may carry a ``Deadline`` (``fibreflow.clock``; the attempt's): each try's HTTP timeout
and each retry's sleep are cut to the time left, and when too little is left for another try
the call stops with ``LLMError(error_type="deadline_exceeded")``, its last row saying so.

Offline means no network to any model API: with ``offline=True`` or ``models.offline: true``
every call goes to the scripted server, whatever the key and the configured base URL.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fibreflow.clock import NO_DEADLINE, Deadline
from fibreflow.config import Settings, load_settings
from fibreflow.errors import ConfigError, LLMError, StoreError
from fibreflow.models.pricing import USAGE_FIELDS, Pricing, usage_tokens
from fibreflow.models.routing import ModelRouter, RouteDecision

if TYPE_CHECKING:
    from anthropic.types import Message

    from fibreflow.models.scripted import ScriptedServer
    from fibreflow.store import Store

log = logging.getLogger(__name__)

MISSING_KEY = "ANTHROPIC_API_KEY is not set: export it, or use --offline for the scripted model"
OFFLINE_KEY = "scripted-offline"  # not a secret: the scripted server accepts any key
_STATUS_NAMES = {429: "rate_limited", 529: "overloaded"}
DEADLINE_EXCEEDED = "deadline_exceeded"  # LLMError.error_type and llm_calls.status of a call the deadline stopped
_MIN_TRY_S = 0.1  # a try needs at least this much of the deadline left to be worth sending


@dataclass(frozen=True)
class CallRecord:
    """What one ``create_message`` cost, after all its tries."""

    call_id: str
    tier: str
    model: str
    tries: int
    cost_usd: float
    latency_s: float
    usage: dict[str, int]
    reason: str


@dataclass(frozen=True)
class _Failure:
    status: str
    retryable: bool
    message: str
    status_code: int | None = None
    error_type: str | None = None
    retry_after: float | None = None


class LLMClient:
    """Messages API client for all of fibreflow; see the module docstring."""

    def __init__(self, *, store: Store | None = None, settings: Settings | None = None,
                 router: ModelRouter | None = None, base_url: str | None = None, api_key: str | None = None,
                 offline: bool = False, script: Any = None, pricing: Pricing | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        import anthropic

        self.settings = settings or load_settings()
        self.models = self.settings.models
        self.router = router or ModelRouter(self.settings)
        self.pricing = pricing or Pricing.load(self.models.pricing_path)
        self._store = store
        self._sleep = sleep
        self.scripted: ScriptedServer | None = None
        self._owns_server = False
        if offline or self.models.offline:  # offline: no network to any model API, whatever key and URL
            from fibreflow.models.scripted import ScriptedServer, shared_server

            if script is not None:
                self.scripted, self._owns_server = ScriptedServer(script).start(), True
            else:
                self.scripted = shared_server()
            base_url, api_key = self.scripted.base_url, OFFLINE_KEY
        else:
            api_key = api_key or os.environ.get("ANTHROPIC_API_KEY")
            if not api_key:
                raise ConfigError(MISSING_KEY, key="ANTHROPIC_API_KEY")
        self._secret = api_key
        self.base_url = base_url or self.models.base_url
        self._client = anthropic.Anthropic(api_key=api_key, base_url=self.base_url, max_retries=0,
                                           timeout=self.models.timeout_s)
        self._local = threading.local()
        self._total_lock = threading.Lock()
        self.total_cost_usd = 0.0

    @property
    def is_scripted(self) -> bool:
        """Whether replies come from the scripted (offline) model."""
        return self.scripted is not None

    def describe(self) -> str:
        """One line naming the model source, e.g. for ``fibreflow demo``."""
        if self.scripted is not None:
            return f"model: scripted (offline, no real model) at {self.scripted.base_url}"
        return f"model: Anthropic Messages API{f' at {self.base_url}' if self.base_url else ''}"

    @property
    def last_call(self) -> CallRecord | None:
        """The record of this thread's last successful ``create_message``."""
        return getattr(self._local, "last", None)

    def close(self) -> None:
        """Close the HTTP client (and a scripted server this client started)."""
        self._client.close()
        if self._owns_server and self.scripted is not None:
            self.scripted.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def store(self) -> Store:
        """Where calls are recorded: the given store, else the configured one."""
        if self._store is None:
            from fibreflow.store import Store

            path = os.environ.get("FIBREFLOW_DB") or self.settings.db_path
            self._store = Store(path, lock_timeout_s=self.settings.store.lock_timeout_s)
        return self._store

    # -- the call -----------------------------------------------------------------------

    def route(self, *, messages: Sequence[Any], tier: str | None = None, task_text: str | None = None,
              agent: str | None = None, model_id: str | None = None) -> RouteDecision:
        """The routing decision ``create_message`` would make."""
        return self.router.classify_request(task_text if task_text is not None else _last_user_text(messages),
                                            agent, tier=tier, model_id=model_id)

    def create_message(self, *, messages: Sequence[Any], max_tokens: int, system: Any = None,
                       tools: Sequence[Any] | None = None, tier: str | None = None, task_text: str | None = None,
                       agent: str | None = None, run_id: str | None = None, attempt_id: str | None = None,
                       deadline: Deadline | None = None, model_id: str | None = None, **kw: Any) -> Message:
        """Send one Messages API request on the routed tier's model; retried, priced, recorded.

        ``model_id`` (an override, e.g. ``fibreflow build --model MODEL_ID``) sends the request to
        that model whatever the tier; it must be priced in the pricing file.

        With ``deadline``, no try runs past it: each try's timeout and each retry's sleep are cut
        to the time left, and the call raises ``LLMError`` with ``error_type="deadline_exceeded"``
        when too little is left for another try.
        """
        import anthropic

        if "model" in kw:
            raise TypeError("create_message() takes tier=, not model=: models come from the tiers in config")
        text = task_text if task_text is not None else _last_user_text(messages)
        decision = self.router.classify_request(text, agent, tier=tier, model_id=model_id)
        model = decision.model_id
        self.pricing.rates(model)  # an unpriced model fails before any money is spent
        params: dict[str, Any] = {"model": model, "messages": list(messages), "max_tokens": max_tokens, **kw}
        if system is not None:
            params["system"] = system
        if tools is not None:
            params["tools"] = list(tools)
        call_id = uuid.uuid4().hex
        row = {"call_id": call_id, "run_id": run_id, "attempt_id": attempt_id, "agent": agent,
               "tier": decision.tier, "model": model,
               "task_text": text if self.models.store_prompts else None}
        deadline = deadline or NO_DEADLINE
        tries = self.models.max_retries + 1
        failure: _Failure | None = None
        for attempt in range(1, tries + 1):
            left = deadline.remaining_s()
            if left is not None and left < _MIN_TRY_S:  # nothing sent: no row, the caller is told why
                raise self._deadline_error(model, deadline, attempt - 1, failure,
                                           f"ran out before try {attempt} was sent")
            timeout = self.models.timeout_s if left is None else min(self.models.timeout_s, left)
            started = time.monotonic()
            try:
                message = self._client.messages.create(**params, timeout=timeout)
            except anthropic.APIError as exc:
                failure = self._failure(exc, timeout=timeout, capped=timeout < self.models.timeout_s)
                failed = {**row, "try_no": attempt, "latency_s": time.monotonic() - started,
                          "cost_usd": 0.0, **dict.fromkeys(USAGE_FIELDS, 0)}  # failed tries are not billed
                if not failure.retryable:
                    self._record({**failed, "status": failure.status, "error": failure.message})
                    raise LLMError(f"model call to {model} failed: {failure.message}",
                                   status_code=failure.status_code, error_type=failure.error_type or failure.status,
                                   tries=attempt) from None
                delay = self._delay(attempt, failure.retry_after) if attempt < tries else 0.0
                left = deadline.remaining_s()
                if failure.status == DEADLINE_EXCEEDED or (
                        attempt < tries and left is not None and left < delay + _MIN_TRY_S):
                    why = ("ran out during the try" if failure.status == DEADLINE_EXCEEDED else
                           f"leaves {max(left or 0.0, 0.0):.1f}s, too little for a retry in {delay:.1f}s")
                    note = failure.message if failure.status == DEADLINE_EXCEEDED else \
                        f"{failure.message}; deadline exceeded: no retry ({deadline.describe()} {why})"
                    self._record({**failed, "status": failure.status, "error": note})
                    raise self._deadline_error(model, deadline, attempt, failure, why) from None
                self._record({**failed, "status": failure.status, "error": failure.message})
                if attempt < tries:
                    self._sleep(deadline.cap(delay))
                continue
            latency = time.monotonic() - started
            usage = usage_tokens(message.usage)
            cost = self.pricing.price_usage(model, message.usage)
            self._record({**row, "try_no": attempt, "latency_s": latency, "status": "ok",
                          "stop_reason": message.stop_reason, "cost_usd": cost, **usage})
            with self._total_lock:
                self.total_cost_usd += cost
            self._local.last = CallRecord(call_id, decision.tier, model, attempt, cost, latency, usage,
                                          decision.reason)
            return message
        assert failure is not None
        raise LLMError(f"model call to {model} failed after {tries} tries; last error: {failure.message}",
                       status_code=failure.status_code, error_type=failure.error_type or failure.status, tries=tries)

    def retrieve_model(self, model_id: str, *, timeout_s: float = 15.0) -> str:
        """Ask the Models API whether ``model_id`` exists for this key (the preflight; not a model
        call, so not recorded). Returns the model's display name; a refused key, an unknown model,
        an unreachable API raise LLMError (``status_code`` 401/403, 404, None)."""
        import anthropic

        try:
            info = self._client.models.retrieve(model_id, timeout=min(timeout_s, self.models.timeout_s))
        except anthropic.APIError as exc:
            failure = self._failure(exc, timeout=timeout_s)
            raise LLMError(f"Models API: {failure.message}", status_code=failure.status_code,
                           error_type=failure.error_type or failure.status, tries=1) from None
        return str(info.display_name)

    # -- helpers ------------------------------------------------------------------------

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.models.backoff_max_s)
        backoff = min(self.models.backoff_max_s, self.models.backoff_base_s * 2 ** (attempt - 1))
        return backoff * random.uniform(0.5, 1.0)  # jitter: parallel attempts must not retry in lockstep

    @staticmethod
    def _deadline_error(model: str, deadline: Deadline, tries: int, failure: _Failure | None, why: str) -> LLMError:
        last = f"; last error: {failure.message}" if failure is not None and \
            failure.status != DEADLINE_EXCEEDED else ""
        return LLMError(f"model call to {model} stopped after {tries} tries: deadline exceeded "
                        f"({deadline.describe()} {why}){last}",
                        status_code=failure.status_code if failure is not None else None,
                        error_type=DEADLINE_EXCEEDED, tries=tries)

    def _failure(self, exc: Any, *, timeout: float, capped: bool = False) -> _Failure:
        import anthropic

        if isinstance(exc, anthropic.APITimeoutError):
            if capped:  # the try's timeout was the time left to the deadline
                return _Failure(DEADLINE_EXCEEDED, True,
                                f"deadline exceeded: no answer within {timeout:.1f}s, the time left (timeout)")
            return _Failure("timeout", True, f"no answer within {timeout:g}s (timeout)")
        if isinstance(exc, anthropic.APIConnectionError):
            return _Failure("connection_error", True, self._redact(f"connection error: {exc}"))
        code = getattr(exc, "status_code", None)
        body = getattr(exc, "body", None)
        err = body.get("error") if isinstance(body, dict) else None
        kind = err.get("type") if isinstance(err, dict) else None
        detail = err.get("message") if isinstance(err, dict) else str(exc)
        message = self._redact(f"{code} {kind or 'error'}: {detail}")
        if code == 401:
            message += " (check ANTHROPIC_API_KEY)"
        retryable = code is not None and (code in (408, 409, 429) or code >= 500)
        status = _STATUS_NAMES.get(code or 0) or ("server_error" if retryable else "client_error")
        response = getattr(exc, "response", None)
        return _Failure(status, retryable, message, code, kind, _retry_after(response))

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret and len(self._secret) >= 8 else text

    def _record(self, row: dict[str, Any]) -> None:
        row = {"created_at": dt.datetime.now(dt.UTC), **row}
        try:
            self.store.insert_rows("llm_calls", [row])
        except StoreError as exc:  # a busy store must not lose the reply that was paid for
            log.warning("llm_calls row for %s not stored: %s", row.get("call_id"), exc)


def _retry_after(response: Any) -> float | None:
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return float(value) * scale
        except ValueError:
            from email.utils import parsedate_to_datetime

            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                continue
            return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
    return None


def insert_calls(store: Store, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert ``llm_calls`` rows as they are (a sample history); returns how many. This module is
    the table's only writer: ``LLMClient`` records its own tries."""
    return store.insert_rows("llm_calls", rows)


def _last_user_text(messages: Sequence[Any]) -> str:
    from fibreflow.models.scripted_replies import last_user_text

    return last_user_text([m if isinstance(m, dict) else dict(m) for m in messages])[:4000]


__all__ = ["DEADLINE_EXCEEDED", "MISSING_KEY", "CallRecord", "LLMClient", "insert_calls"]
