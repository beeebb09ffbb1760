"""Sending one queued alert: Slack (slack_sdk, incoming webhook or bot token) or a JSON webhook.

A send either returns (delivered) or raises AlertDeliveryError carrying ``retry_after`` when
the other side said how long to wait; the outbox decides what happens next. Secrets (the bot
token, webhook URLs) are read from the environment at send time, never stored, and scrubbed
from every error message; slack_sdk logs through a logger that cannot print them.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fibreflow.config import SECRET_ENV_VARS, Settings
from fibreflow.errors import AlertDeliveryError, MissingEnvError
from fibreflow.redaction import redact_url
from fibreflow.yamlio import env_refs, expand_env

NO_SLACK_CONFIG = "no Slack webhook or bot token configured (set SLACK_WEBHOOK_URL or SLACK_BOT_TOKEN)"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_SLACK_TOKEN = re.compile(r"\bxox[a-z]-[A-Za-z0-9-]+")
_SLACK_HOOK = re.compile(r"(hooks\.slack\.com/(?:services|workflows|triggers)/)\S+")

log = logging.getLogger(__name__)


class RouteDown(AlertDeliveryError):
    """Internal: the far side is down, rate limiting or unconfigured, so every row on its route waits."""


def _refused(message: str, status: int | None, retry_after: float | None) -> AlertDeliveryError:
    down = status is None or status == 429 or status >= 500 or status in (401, 403)
    return (RouteDown if down else AlertDeliveryError)(message, retry_after=retry_after)


def scrub(text: str, *, extra: tuple[str, ...] = ()) -> str:
    """``text`` without secret values: env secrets, URL passwords, Slack tokens and hook paths."""
    secrets = [os.environ.get(name, "") for name in SECRET_ENV_VARS] + list(extra)
    for secret in sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = redact_url(text)
    text = _SLACK_TOKEN.sub("xox?-***", text)
    return _SLACK_HOOK.sub(r"\1***", text)


class _Redact(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = scrub(record.getMessage()), None
        return True


# slack_sdk logs request URLs (an incoming-webhook URL is a secret) at DEBUG and, on retries, at
# INFO when its logger's own level is NOTSET. Every failure is reported by the dispatcher
# (scrubbed) anyway, so the SDK's own logger only lets critical records through, redacted.
_SDK_LOGGER = logging.getLogger("fibreflow.sla.slack_sdk")
_SDK_LOGGER.setLevel(logging.CRITICAL)
_SDK_LOGGER.addFilter(_Redact())


@dataclass(frozen=True)
class Outgoing:
    """One claimed outbox row."""

    id: int
    dedupe_key: str
    sla_name: str
    kind: str
    severity: str | None
    action: str
    destination: str | None
    message: str
    payload: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0


def retry_after_of(headers: Mapping[str, Any] | None) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds or HTTP date), or None."""
    if not headers:
        return None
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(str(value))
        except (TypeError, ValueError):
            return None
        return max(when.timestamp() - time.time(), 0.0)


def _retry_handlers(max_inline_wait_s: float) -> list[Any]:
    from slack_sdk.http_retry.builtin_handlers import (
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
        ServerErrorRetryHandler,
    )
    from slack_sdk.http_retry.builtin_interval_calculators import FixedValueRetryIntervalCalculator

    class BoundedRateLimitRetryHandler(RateLimitErrorRetryHandler):
        """Waits out a short Retry-After in place; longer ones go back to the outbox's schedule."""

        def _can_retry(self, *, state: Any, request: Any, response: Any = None, error: Any = None) -> bool:
            if response is None or response.status_code != 429:
                return False
            wait = retry_after_of(response.headers)
            return wait is None or wait <= max_inline_wait_s

    quick = FixedValueRetryIntervalCalculator(0.2)
    return [BoundedRateLimitRetryHandler(max_retry_count=1),
            ServerErrorRetryHandler(max_retry_count=1, interval_calculator=quick),
            ConnectionErrorRetryHandler(max_retry_count=1, interval_calculator=quick)]


def _bypass_proxy_for_loopback(client: Any, url: str) -> None:
    # slack_sdk takes HTTPS_PROXY from the environment and ignores NO_PROXY
    if urlsplit(url).hostname in _LOOPBACK:
        client.proxy = None


class Transports:
    """Sends outbox rows; one instance per ``deliver_pending`` call (clients are built lazily)."""

    def __init__(self, *, settings: Settings, rule_urls: Mapping[str, str],
                 environ: Mapping[str, str] | None = None, timeout_s: float = 10.0,
                 max_inline_wait_s: float = 2.0) -> None:
        self.settings = settings
        self.rule_urls = rule_urls
        self.environ = os.environ if environ is None else environ
        self.timeout_s = timeout_s
        self.max_inline_wait_s = max_inline_wait_s
        self._slack: Callable[[Outgoing], None] | None = None

    def route(self, item: Outgoing) -> str:
        """Rows sharing a route share a fate when the far side is down or rate limiting."""
        return "slack" if item.action == "slack" else f"webhook:{item.destination}"

    def send(self, item: Outgoing) -> None:
        """Deliver ``item`` or raise AlertDeliveryError (message scrubbed of secrets)."""
        if item.action == "slack":
            if self._slack is None:
                self._slack = self._slack_sender()
            self._slack(item)
        elif item.action == "webhook":
            self._webhook(item)
        else:
            raise AlertDeliveryError(f"unknown alert action {item.action!r}")

    # -- Slack ----------------------------------------------------------------------------

    def _slack_sender(self) -> Callable[[Outgoing], None]:
        webhook_url = self.environ.get("SLACK_WEBHOOK_URL", "").strip()
        token = self.environ.get("SLACK_BOT_TOKEN", "").strip()
        timeout = int(max(self.timeout_s, 1))
        if webhook_url:
            from slack_sdk.webhook import WebhookClient

            hook = WebhookClient(webhook_url, timeout=timeout, logger=_SDK_LOGGER,
                                 retry_handlers=_retry_handlers(self.max_inline_wait_s))
            _bypass_proxy_for_loopback(hook, webhook_url)

            def via_webhook(item: Outgoing) -> None:
                resp = _guard(lambda: hook.send(text=item.message, blocks=item.payload.get("blocks")),
                              "Slack webhook", webhook_url)
                if resp.status_code != 200:
                    raise _refused(scrub(f"Slack webhook answered HTTP {resp.status_code}: "
                                         f"{str(resp.body)[:200]}", extra=(webhook_url,)),
                                   resp.status_code, retry_after_of(resp.headers))

            return via_webhook
        if token:
            from slack_sdk import WebClient
            from slack_sdk.errors import SlackApiError

            base_url = self.settings.slack.base_url or WebClient.BASE_URL
            client = WebClient(token=token, base_url=base_url, timeout=timeout, logger=_SDK_LOGGER,
                               retry_handlers=_retry_handlers(self.max_inline_wait_s))
            _bypass_proxy_for_loopback(client, base_url)

            def via_bot(item: Outgoing) -> None:
                channel = item.destination or self.settings.slack.channel
                try:
                    _guard(lambda: client.chat_postMessage(channel=channel, text=item.message,
                                                           blocks=item.payload.get("blocks")),
                           "Slack API", base_url)
                except SlackApiError as exc:
                    resp = exc.response
                    error = resp.get("error") if isinstance(resp.data, dict) else None
                    status = 401 if error in ("not_authed", "invalid_auth", "token_revoked") else resp.status_code
                    raise _refused(scrub(f"Slack chat.postMessage to {channel} failed: HTTP {resp.status_code}"
                                         + (f", {error}" if error else ""), extra=(token,)),
                                   status, retry_after_of(resp.headers)) from None

            return via_bot

        def unconfigured(item: Outgoing) -> None:
            raise RouteDown(NO_SLACK_CONFIG)

        return unconfigured

    # -- generic webhook ------------------------------------------------------------------

    def _webhook_url(self, item: Outgoing) -> str:
        destination = item.destination or ""
        if destination.startswith("rule:"):
            url = self.rule_urls.get(destination[len("rule:"):])
            if url is None:
                raise AlertDeliveryError(f"the alert rule {destination} is no longer configured; "
                                         "its webhook URL is unknown")
            destination = url
        try:
            return expand_env(destination, env=self.environ, key="alerts.url")
        except MissingEnvError as exc:
            raise AlertDeliveryError(f"webhook URL: environment variable {exc.var} is not set") from None

    def _webhook(self, item: Outgoing) -> None:
        url = self._webhook_url(item)
        body = {k: v for k, v in item.payload.items() if k != "blocks"}
        body.setdefault("text", item.message)
        body["dedupe_key"] = item.dedupe_key
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "fibreflow-sla-alerts",
            "Idempotency-Key": item.dedupe_key})
        handlers = [urllib.request.ProxyHandler({})] if urlsplit(url).hostname in _LOOPBACK else []
        opener = urllib.request.build_opener(*handlers)
        try:
            with _guard(lambda: opener.open(request, timeout=self.timeout_s), "webhook", url) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            raise _refused(f"webhook answered HTTP {exc.code}", exc.code,
                           retry_after_of(dict(exc.headers.items()))) from None


def _guard(call: Callable[[], Any], what: str, secret_url: str) -> Any:
    """Run ``call``; turn network failures into AlertDeliveryError without the URL in the text."""
    try:
        return call()
    except urllib.error.HTTPError:
        raise
    except urllib.error.URLError as exc:
        raise RouteDown(scrub(f"{what} unreachable: {exc.reason}", extra=(secret_url,))) from None
    except (OSError, TimeoutError) as exc:
        raise RouteDown(scrub(f"{what} unreachable: {type(exc).__name__}: {exc}",
                                       extra=(secret_url,))) from None


def webhook_destination(url: str, rule_id: str) -> str:
    """What the outbox stores for a webhook rule: its ``${VAR}`` template, never a literal URL."""
    return url if env_refs(url) else f"rule:{rule_id}"


__all__ = ["NO_SLACK_CONFIG", "Outgoing", "RouteDown", "Transports", "retry_after_of", "scrub", "webhook_destination"]
