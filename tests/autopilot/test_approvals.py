"""Approve from Slack: the real approvals server (thread and `fibreflow approvals serve` process)
receives requests signed as Slack signs them, decides through the same code as the CLI, and
updates the message through the real slack_sdk clients against the local Slack receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from slack_sdk.signature import SignatureVerifier
from store_support import store_unchanged

from fibreflow.autopilot import AutopilotOptions, load_result, run_autopilot
from fibreflow.autopilot.approvals import PATH, ApprovalServer
from fibreflow.config import Settings, load_settings
from fibreflow.models.scripts import write_demo_repo
from fibreflow.store import Store
from fibreflow.testing.slack_receiver import SlackReceiver

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # the shape of a Slack signing secret (a test value)
TOKEN = "xoxb-test-approvals-token"
FIX = "printf 'def add(a, b):\\n    return a + b\\n' > calc.py"
GOAL = "Fix calc.add: it must return the sum of its arguments."


def sign(body: bytes, *, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    """Slack's v0 request signature: HMAC-SHA256 of ``v0:TIMESTAMP:BODY`` under the signing secret."""
    stamp = str(int(time.time() if at is None else at))
    digest = hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": f"v0={digest}"}


def form(payload: dict[str, Any] | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload)
    return urllib.parse.urlencode({"payload": text}).encode()


def click(action: dict[str, Any], *, user: str = "U0ANA", name: str = "ana",
          response_url: str | None = None) -> dict[str, Any]:
    """A ``block_actions`` payload as Slack sends it for one button of the approval message."""
    return {"type": "block_actions", "user": {"id": user, "username": name, "name": name, "team_id": "T0"},
            "api_app_id": "A0", "token": "legacy", "trigger_id": "1.2.3",
            "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "C0FIBREFLOW"},
            "channel": {"id": "C0FIBREFLOW", "name": "fibreflow-alerts"},
            "message": {"ts": "1700000000.000100", "type": "message"},
            "response_url": response_url or "https://hooks.slack.com/actions/T0/1/abc",
            "actions": [{"type": "button", "block_id": "fibreflow_decision", "action_ts": "1700000001.1",
                         **{k: action[k] for k in ("action_id", "value")}}]}


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded", **headers})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture(autouse=True)
def _own_tmpdir(own_tmpdir: Path) -> None:
    """Runs left awaiting go keep their deploy checkouts in the test's own ``$TMPDIR``."""


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlackReceiver]:
    """The local Slack; the approval request goes out with the bot token (chat.postMessage)."""
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    with SlackReceiver(token=TOKEN) as receiver:
        yield receiver


@pytest.fixture
def settings(tmp_path: Path, slack: SlackReceiver, monkeypatch: pytest.MonkeyPatch) -> Settings:
    path = tmp_path / "fibreflow.yaml"
    path.write_text(yaml.safe_dump({
        "slack": {"base_url": slack.api_base_url},
        "autopilot": {"staging_command": "true", "smoke_checks": [{"name": "up", "command": "true"}],
                      "production_command": f"echo \"$FIBREFLOW_COMMIT\" > {tmp_path}/production"}}))
    monkeypatch.setenv("FIBREFLOW_CONFIG", str(path))
    return load_settings(path)


def awaiting_run(store: Store, tmp_path: Path, settings: Settings, run_id: str) -> dict[str, Any]:
    """A run awaiting approval whose request went to the local Slack; its Approve and Reject buttons."""
    repo = write_demo_repo(tmp_path / f"repo-{run_id}")
    options = AutopilotOptions(attempts=1, agent="command", agent_command=FIX, offline=True)
    result = run_autopilot(GOAL, options, repo=repo, store=store, settings=settings, run_id=run_id)
    assert result.state == "awaiting_approval", result.error
    return result.to_dict()


def buttons(slack: SlackReceiver) -> dict[str, dict[str, Any]]:
    """The buttons of the approval message Slack received, by their text."""
    message = slack.wait_for(1)[0]
    actions = [b for b in message.blocks or [] if b["type"] == "actions"]
    assert len(actions) == 1
    return {e["text"]["text"]: e for e in actions[0]["elements"]}


def test_the_v0_signature_here_is_the_one_slack_sdk_verifies() -> None:
    body = form({"type": "block_actions"})
    headers = sign(body)
    verifier = SignatureVerifier(SECRET)
    assert verifier.generate_signature(timestamp=headers["X-Slack-Request-Timestamp"], body=body) \
        == headers["X-Slack-Signature"]
    assert verifier.is_valid_request(body, headers)
    assert not verifier.is_valid_request(body, sign(body, secret="another-secret"))


def test_approve_button_deploys_records_who_and_updates_the_message(
        store: Store, tmp_path: Path, settings: Settings, slack: SlackReceiver,
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    run = awaiting_run(store, tmp_path, settings, "run-slack-ok")
    found = buttons(slack)
    assert set(found) == {"Approve", "Reject"} and {b["value"] for b in found.values()} == {"run-slack-ok"}

    caplog.set_level(logging.INFO, logger="fibreflow.autopilot.approvals")
    with ApprovalServer(signing_secret=SECRET, settings=settings, store=store) as server:
        body = form(click(found["Approve"]))
        assert post(server.interactivity_url, body, sign(body)) == (200, "")
        updated = slack.wait_for(2, timeout=120)[1]

        assert updated.path == "/api/chat.update" and updated.body["ts"] == "1700000000.000100"
        assert updated.channel == "C0FIBREFLOW"
        shown = json.dumps(updated.blocks)
        assert "Approved by ana" in shown and "*deployed*" in shown and '"actions"' not in shown
        assert "fibreflow approve run-slack-ok" not in shown  # the decided message offers no decision
        row = store.query_df("SELECT state, decided_by FROM autopilot_runs WHERE run_id = 'run-slack-ok'").iloc[0]
        assert (row.state, row.decided_by) == ("deployed", "ana (Slack U0ANA)")
        result = load_result(store, "run-slack-ok")
        approve = next(s for s in result.steps if s["step"] == "approve")
        assert approve["detail"] == {"by": "ana (Slack U0ANA)", "via": "slack"}
        assert (tmp_path / "production").read_text().strip() == run["commit"]

        # a second decision on the same run, from anyone, changes nothing
        with store_unchanged(store.path):
            again = form(click(found["Reject"], user="U0BOB", name="bob"))
            status, text = post(server.interactivity_url, again, sign(again))
        assert status == 409 and "run-slack-ok is deployed by ana (Slack U0ANA)" in text
        assert load_result(store, "run-slack-ok").decided_by == "ana (Slack U0ANA)"
    assert "accepted: approve run run-slack-ok by ana (Slack U0ANA)" in caplog.text
    assert "approve run run-slack-ok by ana (Slack U0ANA): deployed" in caplog.text
    assert "refused HTTP 409" in caplog.text and SECRET not in caplog.text and TOKEN not in caplog.text
    assert len(slack.messages) == 2


def test_refused_requests_change_nothing_and_say_why(
        store: Store, tmp_path: Path, settings: Settings, slack: SlackReceiver,
        caplog: pytest.LogCaptureFixture) -> None:
    awaiting_run(store, tmp_path, settings, "run-slack-no")
    approve = buttons(slack)["Approve"]
    good = form(click(approve))
    bad_payloads = {
        "no payload": (urllib.parse.urlencode({"other": "x"}).encode(), "no 'payload' field"),
        "not json": (form("{not json"), "'payload' is not JSON"),
        "not an object": (form("[1, 2]"), "'payload' is not a JSON object"),
        "wrong type": (form({**click(approve), "type": "view_submission"}), "payload.type is 'view_submission'"),
        "no actions": (form({**click(approve), "actions": []}), "payload.actions is missing or empty"),
        "unknown action": (form(click({"action_id": "deploy_now", "value": "run-slack-no"})),
                           "action_id 'deploy_now' is not"),
        "no run id": (form(click({"action_id": "fibreflow_approve", "value": ""})), "actions[0].value"),
        "no user": (form({**click(approve), "user": {"name": "x"}}), "payload.user.id is missing"),
        "not a form": (b"%zz=&&", "not a form"),
    }
    caplog.set_level(logging.INFO, logger="fibreflow.autopilot.approvals")
    with ApprovalServer(signing_secret=SECRET, settings=settings, store=store) as server, \
            store_unchanged(store.path):
        url = server.interactivity_url
        assert post(url, good, sign(good, at=time.time() - 301))[0] == 403  # older than five minutes
        assert post(url, good, sign(good, at=time.time() + 400))[0] == 403
        assert post(url, good, sign(good, secret="not-the-secret")) == (401, "bad signature (check SLACK_SIGNING_SECRET)")
        assert post(url, good, {})[0] == 401
        tampered = good.replace(b"U0ANA", b"U0EVE")
        assert post(url, tampered, sign(good))[0] == 401  # signed for another body
        for name, (body, says) in bad_payloads.items():
            status, text = post(url, body, sign(body))
            assert status == 400 and says in text, (name, status, text)
        unknown = form(click({"action_id": "fibreflow_approve", "value": "run-nope"}))
        assert post(url, unknown, sign(unknown)) == (404, "no autopilot run 'run-nope'")
        assert post(url.replace(PATH, "/other"), good, sign(good))[0] == 404
    assert load_result(store, "run-slack-no").state == "awaiting_approval"
    assert not (tmp_path / "production").exists() and len(slack.messages) == 1
    assert "refused HTTP 403" in caplog.text and "possible replay" in caplog.text
    assert "refused HTTP 401 from 127.0.0.1: bad signature" in caplog.text
    assert "refused HTTP 400 from 127.0.0.1: payload.type is 'view_submission'" in caplog.text
    assert "refused HTTP 404 from 127.0.0.1: no autopilot run 'run-nope'" in caplog.text


def test_reject_button_without_a_bot_token_updates_through_the_response_url(
        store: Store, tmp_path: Path, settings: Settings, slack: SlackReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLACK_BOT_TOKEN")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)  # the request went out as a webhook
    awaiting_run(store, tmp_path, settings, "run-slack-rej")
    reject = buttons(slack)["Reject"]
    with ApprovalServer(signing_secret=SECRET, settings=settings, store=store) as server:
        body = form(click(reject, user="U0BOB", name="bob", response_url=slack.response_url_for("T0/9/xyz")))
        assert post(server.interactivity_url, body, sign(body)) == (200, "")
        updated = slack.wait_for(2, timeout=60)[1]
    assert updated.path == "/actions/T0/9/xyz" and updated.body["replace_original"] is True
    assert "Rejected by bob" in json.dumps(updated.blocks) and "*rejected*" in json.dumps(updated.blocks)
    row = store.query_df("SELECT state, decided_by, decision_reason FROM autopilot_runs").iloc[0]
    assert (row.state, row.decided_by, row.decision_reason) == ("rejected", "bob (Slack U0BOB)",
                                                                "rejected in Slack by bob")
    assert not (tmp_path / "production").exists()


def _serve(tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "fibreflow.cli", "approvals", "serve", "--port", "0"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_approvals_serve_process_needs_its_secret_and_a_production_command(
        tmp_path: Path, settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SLACK_SIGNING_SECRET"}
    no_secret = _serve(tmp_path, env)
    assert no_secret.wait(timeout=60) == 2 and "SLACK_SIGNING_SECRET is not set" in no_secret.stderr.read()

    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump({"autopilot": {"staging_command": "true"}}))
    no_prod = _serve(tmp_path, {**env, "SLACK_SIGNING_SECRET": SECRET, "FIBREFLOW_CONFIG": str(bare)})
    assert no_prod.wait(timeout=60) == 2
    err = no_prod.stderr.read()
    assert "autopilot.production_command" in err and str(bare) in err and SECRET not in err

    proc = _serve(tmp_path, {**env, "SLACK_SIGNING_SECRET": SECRET})
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        url = re.search(r"listening on (http://127\.0\.0\.1:\d+/slack/interactivity)", line)
        assert url, line
        body = form(click({"action_id": "fibreflow_approve", "value": "run-nope"}))
        assert post(url.group(1), body, sign(body, secret="wrong"))[0] == 401
        assert post(url.group(1), body, sign(body)) == (404, "no autopilot run 'run-nope'")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    log = proc.stderr.read()
    assert code == 143 and "refused HTTP 401" in log and "refused HTTP 404" in log and SECRET not in log
