"""Approve from Slack: the endpoint behind the approval message's Approve and Reject buttons.

``ApprovalServer`` (``fibreflow approvals serve``) answers Slack's interactivity requests on
``POST /slack/interactivity`` (the Request URL of the Slack app's Interactivity settings): an
``application/x-www-form-urlencoded`` body whose ``payload`` field is the ``block_actions`` JSON.
Each request is checked in this order, and a refusal is an HTTP status and one log line:

* 401: no or a wrong ``X-Slack-Signature`` (v0 HMAC-SHA256 of ``v0:TIMESTAMP:BODY`` under
  ``SLACK_SIGNING_SECRET``, verified by ``slack_sdk.signature.SignatureVerifier``);
* 403: ``X-Slack-Request-Timestamp`` more than 5 minutes from now (a replay);
* 400: a malformed body or payload (the message names the field); 413: a body over 64 KiB;
* 404: an unknown run; 409: a run already decided, being decided, or not awaiting approval.

An accepted click is answered 200 at once (Slack wants an answer within 3 seconds) and then
decided in the request's thread by the very functions ``fibreflow approve`` and ``fibreflow
reject`` call (:mod:`fibreflow.autopilot.decisions`), recording the Slack user as who decided.
A button carries no reason, so a rejection from Slack records "rejected in Slack by NAME".
Afterwards the message is updated to show the decision: ``chat.update`` with ``SLACK_BOT_TOKEN``
(the channel and ``ts`` from the payload), else the payload's ``response_url``.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from fibreflow.autopilot.decisions import APPROVABLE, REJECTABLE, approve_run, reject_run
from fibreflow.autopilot.notify import APPROVE_ACTION, REJECT_ACTION, decision_blocks
from fibreflow.autopilot.result import run_summary
from fibreflow.autopilot.state import RunLog
from fibreflow.config import Settings
from fibreflow.errors import ConfigError, FibreflowError
from fibreflow.store import Store
from fibreflow.testing.server import LocalServer, OwnedHandler

log = logging.getLogger(__name__)

PATH = "/slack/interactivity"
MAX_AGE_S = 300  # Slack's advice: refuse requests older than five minutes
MAX_BODY = 64 * 1024
_ACTIONS = {APPROVE_ACTION: "approve", REJECT_ACTION: "reject"}


class Refused(Exception):
    """A request the server does not act on: its HTTP status and why."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(f"HTTP {status}: {reason}")


@dataclass(frozen=True)
class Click:
    """One button click from the payload."""

    decision: str  # "approve" or "reject"
    run_id: str
    user_id: str
    user_name: str
    response_url: str | None = None
    channel: str | None = None
    ts: str | None = None

    @property
    def who(self) -> str:
        """What is recorded as ``decided_by``: the Slack name and user id."""
        return f"{self.user_name} (Slack {self.user_id})"


def parse_click(body: bytes) -> Click:
    """The click of a ``payload=...`` form body; Refused(400) naming the field at fault."""
    try:
        form = parse_qs(body.decode("utf-8"), strict_parsing=True, max_num_fields=20)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Refused(400, f"the body is not a form (application/x-www-form-urlencoded): {exc}") from None
    if "payload" not in form:
        raise Refused(400, "the form has no 'payload' field")
    try:
        payload = json.loads(form["payload"][-1])
    except ValueError as exc:
        raise Refused(400, f"'payload' is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise Refused(400, "'payload' is not a JSON object")
    if payload.get("type") != "block_actions":
        raise Refused(400, f"payload.type is {payload.get('type')!r}, expected 'block_actions'")
    actions = payload.get("actions")
    if not isinstance(actions, list) or not actions or not isinstance(actions[0], dict):
        raise Refused(400, "payload.actions is missing or empty")
    action = actions[0]
    decision = _ACTIONS.get(str(action.get("action_id")))
    if decision is None:
        raise Refused(400, f"payload.actions[0].action_id {action.get('action_id')!r} is not "
                           f"{' or '.join(_ACTIONS)}")
    run_id = action.get("value")
    if not isinstance(run_id, str) or not run_id.strip():
        raise Refused(400, "payload.actions[0].value (the run id) is missing")
    user = payload.get("user")
    if not isinstance(user, dict) or not isinstance(user.get("id"), str) or not user["id"]:
        raise Refused(400, "payload.user.id is missing")
    name = user.get("username") or user.get("name") or user["id"]
    container, channel, message = (_mapping(payload, key) for key in ("container", "channel", "message"))
    url = payload.get("response_url")
    return Click(decision=decision, run_id=run_id.strip(), user_id=user["id"], user_name=str(name),
                 response_url=url if isinstance(url, str) and url.startswith(("https://", "http://")) else None,
                 channel=container.get("channel_id") or channel.get("id"),
                 ts=container.get("message_ts") or message.get("ts"))


def _mapping(payload: dict[str, Any], key: str) -> dict[str, Any]:
    value = payload.get(key)
    return value if isinstance(value, dict) else {}


class ApprovalServer(LocalServer):
    """Slack's interactivity requests in, approve or reject out; use it as a context manager."""

    thread_name = "fibreflow-approvals"

    def __init__(self, *, signing_secret: str, settings: Settings, store: Store,
                 environ: dict[str, str] | None = None, port: int = 0) -> None:
        """``signing_secret``: the Slack app's signing secret (never logged); ``environ``: where
        ``SLACK_BOT_TOKEN`` is read (the process environment when None)."""
        from slack_sdk.signature import SignatureVerifier

        if not signing_secret.strip():
            raise ConfigError("SLACK_SIGNING_SECRET is empty", key="SLACK_SIGNING_SECRET")
        self.verifier = SignatureVerifier(signing_secret)
        self.settings = settings
        self.store = store
        self.environ = environ
        self._deciding: set[str] = set()
        self._lock = threading.Lock()
        super().__init__(port=port)

    @property
    def interactivity_url(self) -> str:
        """The Request URL to give Slack (behind your HTTPS proxy or tunnel)."""
        return self.url + PATH

    # -- checks ---------------------------------------------------------------------------

    def accept(self, body: bytes, headers: dict[str, str], *, now: float | None = None) -> Click:
        """Verify and parse one request, and reserve its run; Refused when it is not acted on."""
        stamp = headers.get("x-slack-request-timestamp")
        signature = headers.get("x-slack-signature")
        if not stamp or not signature:
            raise Refused(401, "no X-Slack-Signature or X-Slack-Request-Timestamp header")
        try:
            age = (time.time() if now is None else now) - int(stamp)
        except ValueError:
            raise Refused(401, "X-Slack-Request-Timestamp is not a number") from None
        if abs(age) > MAX_AGE_S:
            raise Refused(403, f"request timestamp is {abs(age):.0f}s from now (more than {MAX_AGE_S}s): "
                               "refused as a possible replay")
        if not self.verifier.is_valid(body=body, timestamp=stamp, signature=signature):
            raise Refused(401, "bad signature (check SLACK_SIGNING_SECRET)")
        click = parse_click(body)
        try:
            run = RunLog(self.store, click.run_id).get()
        except ConfigError:
            raise Refused(404, f"no autopilot run {click.run_id!r}") from None
        allowed = APPROVABLE if click.decision == "approve" else REJECTABLE
        with self._lock:
            if click.run_id in self._deciding:
                raise Refused(409, f"run {click.run_id} is being decided right now")
            if run["state"] not in allowed:
                by = f" by {run['decided_by']}" if run.get("decided_by") else ""
                raise Refused(409, f"run {click.run_id} is {run['state']}{by}: cannot {click.decision} it")
            self._deciding.add(click.run_id)
        return click

    # -- the decision ---------------------------------------------------------------------

    def decide(self, click: Click) -> None:
        """Approve or reject as the CLI does, then update the Slack message; errors are logged."""
        try:
            if click.decision == "approve":
                result = approve_run(click.run_id, by=click.who, store=self.store, settings=self.settings,
                                     via="slack")
            else:
                result = reject_run(click.run_id, reason=f"rejected in Slack by {click.user_name}", by=click.who,
                                    store=self.store, settings=self.settings, via="slack")
            log.info("%s run %s by %s: %s", click.decision, click.run_id, click.who, result.state)
        except FibreflowError as exc:
            log.error("%s run %s by %s failed: %s", click.decision, click.run_id, click.who, exc)
            return
        finally:
            with self._lock:
                self._deciding.discard(click.run_id)
        self.update_message(click)

    def update_message(self, click: Click) -> None:
        """Show the decision in the approval message (chat.update, else the response_url)."""
        from fibreflow.sla.delivery import _bypass_proxy_for_loopback, scrub

        env = os.environ if self.environ is None else self.environ
        text, blocks = decision_blocks(run_summary(self.store, click.run_id), decided=click.decision,
                                       by=click.user_name)
        token = env.get("SLACK_BOT_TOKEN", "").strip()
        try:
            if token and click.channel and click.ts:
                from slack_sdk import WebClient

                base_url = self.settings.slack.base_url or WebClient.BASE_URL
                client = WebClient(token=token, base_url=base_url, timeout=10)
                _bypass_proxy_for_loopback(client, base_url)
                client.chat_update(channel=click.channel, ts=click.ts, text=text, blocks=blocks)
            elif click.response_url:
                from slack_sdk.webhook import WebhookClient

                hook = WebhookClient(click.response_url, timeout=10)
                _bypass_proxy_for_loopback(hook, click.response_url)
                resp = hook.send(text=text, blocks=blocks, replace_original=True)
                if resp.status_code != 200:
                    raise RuntimeError(f"response_url answered HTTP {resp.status_code}")
            else:
                log.warning("run %s: the Slack message was not updated (no bot token and no response_url)",
                            click.run_id)
                return
        except Exception as exc:  # the decision stands; only its display in Slack is missing
            log.error("run %s: updating the Slack message failed: %s", click.run_id,
                      scrub(str(exc), extra=tuple(v for v in (token, click.response_url) if v)))


class _Handler(OwnedHandler):
    owner: ApprovalServer

    def do_GET(self) -> None:  # noqa: N802
        self._answer(404, "not found (Slack posts to " + PATH + ")")

    def do_POST(self) -> None:  # noqa: N802
        peer = self.client_address[0]
        if self.path.split("?", 1)[0] != PATH:
            self._answer(404, f"not found (Slack posts to {PATH})")
            log.warning("refused HTTP 404 from %s: POST %s is not %s", peer, self.path[:100], PATH)
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        try:
            if not 0 <= length <= MAX_BODY:
                raise Refused(413 if length > MAX_BODY else 400, f"Content-Length {length} (at most {MAX_BODY})")
            body = self.rfile.read(length)
            click = self.owner.accept(body, {k.lower(): v for k, v in self.headers.items()})
        except Refused as exc:
            self._answer(exc.status, exc.reason)
            log.warning("refused HTTP %d from %s: %s", exc.status, peer, exc.reason)
            return
        self._answer(200, "")
        log.info("accepted: %s run %s by %s", click.decision, click.run_id, click.who)
        self.owner.decide(click)

    def _answer(self, status: int, text: str) -> None:
        body = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()


ApprovalServer.handler = _Handler

__all__ = ["MAX_AGE_S", "PATH", "ApprovalServer", "Click", "Refused", "parse_click"]
