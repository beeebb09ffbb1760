"""The local Slack receiver speaks both protocols to real clients and injects Slack's failures."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.webhook import WebhookClient

from fibreflow.testing import SlackReceiver


def _post(url: str, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> tuple[int, str, dict]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": ctype, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode(), dict(resp.headers.items())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers.items())


def test_addresses() -> None:
    receiver = SlackReceiver()
    with pytest.raises(RuntimeError):
        _ = receiver.url
    with receiver:
        assert receiver.url.startswith("http://127.0.0.1:")
        assert receiver.webhook_url.startswith(receiver.url + "/services/")
        assert receiver.api_base_url == receiver.url + "/api/"


def test_incoming_webhook_answers_ok_and_records() -> None:
    with SlackReceiver() as receiver:
        resp = WebhookClient(receiver.webhook_url).send(text="hello", blocks=[
            {"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}])
        assert (resp.status_code, resp.body) == (200, "ok")
        status, body, _ = _post(receiver.webhook_url, b"{}", "application/json")
        assert (status, body) == (400, "no_text")
        [message] = receiver.wait_for(1)
        assert message.kind == "webhook" and message.text == "hello"
        assert message.blocks[0]["text"]["text"] == "*hi*"
        assert message.received_at.tzinfo is not None
        assert [r.status for r in receiver.requests] == [200, 400]


def test_web_api_post_message_json_and_form() -> None:
    with SlackReceiver(token="xoxb-right") as receiver:
        client = WebClient(token="xoxb-right", base_url=receiver.api_base_url)
        resp = client.chat_postMessage(channel="#ops", text="json body")
        assert resp["ok"] is True and resp["channel"] and resp["ts"]
        assert resp["message"]["text"] == "json body"
        form = urllib.parse.urlencode({"token": "xoxb-right", "channel": "#ops", "text": "form body"}).encode()
        status, body, _ = _post(receiver.api_base_url + "chat.postMessage", form,
                                "application/x-www-form-urlencoded")
        assert status == 200 and json.loads(body)["ok"] is True
        messages = receiver.wait_for(2)
        assert [(m.kind, m.channel, m.text) for m in messages] == [("api", "#ops", "json body"),
                                                                 ("api", "#ops", "form body")]
        assert "token" not in messages[1].body and "Authorization" not in messages[0].headers


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
@pytest.mark.parametrize(("token", "kwargs", "error"), [
    ("xoxb-wrong", {"channel": "#ops", "text": "x"}, "invalid_auth"),
    ("xoxb-right", {"channel": "", "text": "x"}, "channel_not_found"),
    ("xoxb-right", {"channel": "#ops", "text": ""}, "no_text"),
])
def test_web_api_errors_have_slacks_shape(token: str, kwargs: dict, error: str) -> None:
    with SlackReceiver(token="xoxb-right") as receiver:
        with pytest.raises(SlackApiError) as info:
            WebClient(token=token, base_url=receiver.api_base_url).chat_postMessage(**kwargs)
        assert info.value.response["error"] == error
        assert receiver.messages == []


def test_injected_rate_limit_and_server_error() -> None:
    with SlackReceiver() as receiver:
        receiver.fail_next(1, status=429, retry_after=7)
        receiver.fail_next(1, status=500)
        status, _, headers = _post(receiver.webhook_url, b'{"text": "a"}', "application/json")
        assert status == 429 and headers["Retry-After"] == "7"
        status, _, _ = _post(receiver.webhook_url, b'{"text": "a"}', "application/json")
        assert status == 500
        status, body, _ = _post(receiver.webhook_url, b'{"text": "a"}', "application/json")
        assert (status, body) == (200, "ok")
        assert [r.status for r in receiver.requests] == [429, 500, 200]
        assert len(receiver.messages) == 1


def test_wait_for_times_out() -> None:
    with SlackReceiver() as receiver:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="0 of 1"):
            receiver.wait_for(1, timeout=0.2)
        assert time.monotonic() - started < 0.2 * 3 + 5
