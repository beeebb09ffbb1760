"""Delivering the outbox with the real slack_sdk clients and urllib to a local receiver on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Iterator

import pytest

from fibreflow.config import Settings, SlackSettings
from fibreflow.sla.alerts import AlertDispatcher
from fibreflow.sla.delivery import NO_SLACK_CONFIG
from fibreflow.sla.model import AlertRule, CheckResult, MonitoringSettings
from fibreflow.sla.outbox import INTERRUPTED
from fibreflow.store import Store
from fibreflow.testing import SlackReceiver

T0 = dt.datetime(2026, 1, 5, 12, 0, tzinfo=dt.UTC)
TOKEN = "xoxb-1234567890-fibreflow-test-token"


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def violation(when: dt.datetime, *, name: str = "lag", value: float = 412.0) -> CheckResult:
    return CheckResult(name=name, status="violation", value=value, threshold=300, checked_at=when, duration_s=0.01)


@pytest.fixture
def receiver() -> Iterator[SlackReceiver]:
    with SlackReceiver(token=TOKEN) as r:
        yield r


def make(store: Store, receiver: SlackReceiver, *rules: AlertRule, **kwargs: object) -> AlertDispatcher:
    settings = Settings(slack=SlackSettings(base_url=receiver.api_base_url, channel="#default"))
    return AlertDispatcher(store, list(rules) or [AlertRule(condition="lag > 300", channel="#ops")],
                           MonitoringSettings(cooldown=300), settings, **kwargs)  # type: ignore[arg-type]


def rows(store: Store) -> list[dict]:
    return store.query_df("SELECT * FROM alert_outbox ORDER BY id").to_dict("records")


def test_bot_token_delivery_with_web_client(store: Store, receiver: SlackReceiver,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    d = make(store, receiver, AlertRule(condition="lag > 300", channel="#ops", severity="critical"),
             AlertRule(condition="vlm > 600"))
    d.evaluate([violation(at(0)), violation(at(0), name="vlm", value=700)], now=at(0))
    report = d.deliver_pending(now=at(0))
    assert (report.delivered, report.failed, report.pending) == (2, 0, 0)
    first, second = receiver.wait_for(2)
    assert (first.kind, first.channel, second.channel) == ("api", "#ops", "#default")
    assert first.text == "lag violated: 412 (SLA: 300)"
    assert first.blocks[0]["text"]["text"].endswith("CRITICAL: lag")
    assert [r["status"] for r in rows(store)] == ["delivered", "delivered"]
    assert d.deliver_pending(now=at(1)).delivered == 0
    assert len(receiver.messages) == 2


def test_incoming_webhook_is_preferred(store: Store, receiver: SlackReceiver,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", receiver.webhook_url)
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    d = make(store, receiver)
    d.evaluate([violation(at(0))], now=at(0))
    assert d.deliver_pending(now=at(0)).delivered == 1
    [message] = receiver.wait_for(1)
    assert message.kind == "webhook" and message.blocks and message.text == "lag violated: 412 (SLA: 300)"


def test_rate_limited_alert_stays_queued_and_is_delivered_once_later(
        store: Store, receiver: SlackReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    d = make(store, receiver)
    d.evaluate([violation(at(0))], now=at(0))
    receiver.fail_next(1, status=429, retry_after=30)  # longer than we wait in place
    report = d.deliver_pending(now=at(0))
    assert (report.delivered, report.failed, report.pending) == (0, 1, 1)
    [row] = rows(store)
    assert row["status"] == "pending" and row["attempts"] == 1 and "429" in row["last_error"]
    assert row["next_attempt_at"] >= at(30)
    assert d.deliver_pending(now=at(10)).delivered == 0   # not due yet: Retry-After honoured
    assert len(receiver.requests) == 1
    assert d.deliver_pending(now=at(31)).delivered == 1
    assert d.deliver_pending(now=at(99)).delivered == 0
    assert [m.text for m in receiver.messages] == ["lag violated: 412 (SLA: 300)"]
    [row] = rows(store)
    assert (row["status"], row["attempts"]) == ("delivered", 2)


def test_short_retry_after_is_waited_out_by_the_sdk_handler(
        store: Store, receiver: SlackReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_WEBHOOK_URL", receiver.webhook_url)
    d = make(store, receiver)
    d.evaluate([violation(at(0))], now=at(0))
    receiver.fail_next(1, status=429, retry_after=0)
    assert d.deliver_pending(now=at(0)).delivered == 1
    assert [r.status for r in receiver.requests] == [429, 200]
    assert len(receiver.messages) == 1


def test_server_errors_are_retried_later_exactly_once(store: Store, receiver: SlackReceiver,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    d = make(store, receiver)
    d.evaluate([violation(at(0))], now=at(0))
    receiver.fail_next(2, status=500)  # the SDK retries once in place, then the outbox takes over
    report = d.deliver_pending(now=at(0))
    assert (report.delivered, report.failed) == (0, 1)
    assert "HTTP 500" in rows(store)[0]["last_error"]
    assert d.deliver_pending(now=at(60)).delivered == 1
    assert d.deliver_pending(now=at(600)).delivered == 0
    assert len(receiver.messages) == 1
    assert [r.status for r in receiver.requests] == [500, 500, 200]


def test_slack_down_then_back(store: Store, receiver: SlackReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    with SlackReceiver() as gone:
        dead_url = gone.webhook_url
    monkeypatch.setenv("SLACK_WEBHOOK_URL", dead_url)  # nothing listens there any more
    d = make(store, receiver, AlertRule(condition="lag > 300"), AlertRule(condition="lag2 > 300"))
    d.evaluate([violation(at(0)), violation(at(0), name="lag2")], now=at(0))
    report = d.deliver_pending(now=at(0))
    assert (report.delivered, report.failed, report.pending) == (0, 1, 2)
    assert all("unreachable" in r["last_error"] for r in rows(store))
    assert all(dead_url not in r["last_error"] for r in rows(store))
    # the first refusal holds back the rest of the route: one try, not one per row
    assert [r["attempts"] for r in rows(store)] == [1, 0]
    monkeypatch.setenv("SLACK_WEBHOOK_URL", receiver.webhook_url)
    assert d.deliver_pending(now=at(3600)).delivered == 2
    assert len(receiver.messages) == 2


def test_missing_slack_configuration_keeps_the_alert(store: Store, receiver: SlackReceiver,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    d = make(store, receiver)
    d.evaluate([violation(at(0))], now=at(0))
    report = d.deliver_pending(now=at(0))
    assert (report.delivered, report.pending) == (0, 1)
    assert rows(store)[0]["last_error"] == NO_SLACK_CONFIG
    assert receiver.requests == []
    [waiting] = d.pending()
    assert (waiting.kind, waiting.destination, waiting.attempts) == ("violation", "#ops", 1)
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    assert d.deliver_pending(now=at(3600)).delivered == 1


def test_rate_limit_holds_back_the_other_rows_without_counting_attempts(
        store: Store, receiver: SlackReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    rules = [AlertRule(condition=f"s{i} > 300") for i in range(3)]
    d = make(store, receiver, *rules)
    d.evaluate([violation(at(0), name=f"s{i}") for i in range(3)], now=at(0))
    receiver.fail_next(1, status=429, retry_after=20)
    report = d.deliver_pending(now=at(0))
    assert (report.delivered, report.failed, report.pending) == (0, 1, 3)
    assert len(receiver.requests) == 1
    assert [r["attempts"] for r in rows(store)] == [1, 0, 0]
    assert all(r["next_attempt_at"] >= at(20) for r in rows(store))
    assert d.deliver_pending(now=at(21)).delivered == 3
    assert len(receiver.messages) == 3


def test_generic_webhook_action_posts_json(store: Store, receiver: SlackReceiver,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPS_HOOK_URL", receiver.url + "/hooks/ops-secret-path")
    d = make(store, receiver, AlertRule(condition="lag > 300", action="webhook", url="${OPS_HOOK_URL}",
                                        severity="info"),
             AlertRule(condition="lag > 300", action="webhook", url=receiver.url + "/hooks/literal"))
    d.evaluate([violation(at(0))], now=at(0))
    receiver.fail_next(1, status=500)
    first = d.deliver_pending(now=at(0))
    assert (first.delivered, first.failed) == (1, 1)  # routes are independent
    assert d.deliver_pending(now=at(60)).delivered == 1
    by_path = {m.path: m for m in receiver.wait_for(2)}
    hook = by_path["/hooks/ops-secret-path"]
    assert hook.kind == "webhook" and hook.headers["Content-Type"] == "application/json"
    assert hook.body["sla"] == "lag" and hook.body["value"] == 412 and hook.body["severity"] == "info"
    assert hook.body["kind"] == "violation" and "blocks" not in hook.body
    assert hook.headers["Idempotency-Key"] == hook.body["dedupe_key"]
    assert "/hooks/literal" in by_path
    destinations = [r["destination"] for r in rows(store)]
    assert destinations[0] == "${OPS_HOOK_URL}" and destinations[1].startswith("rule:")


def test_missing_webhook_variable_is_named(store: Store, receiver: SlackReceiver) -> None:
    d = make(store, receiver, AlertRule(condition="lag > 300", action="webhook", url="${NOT_SET_HOOK}"))
    d.evaluate([violation(at(0))], now=at(0))
    assert d.deliver_pending(now=at(0)).pending == 1
    assert "NOT_SET_HOOK is not set" in rows(store)[0]["last_error"]


def test_no_secret_reaches_duckdb_or_the_logs(store: Store, receiver: SlackReceiver,
                                              monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    hook_url = receiver.url + "/hooks/T0/B0/very-secret-hook"
    monkeypatch.setenv("SLACK_WEBHOOK_URL", receiver.webhook_url)
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("OPS_HOOK_URL", hook_url)
    d = make(store, receiver, AlertRule(condition="lag > 300"),
             AlertRule(condition="lag > 300", action="webhook", url="${OPS_HOOK_URL}"))
    d.evaluate([violation(at(0))], now=at(0))
    receiver.fail_next(2, status=500)
    d.deliver_pending(now=at(0))
    monkeypatch.delenv("SLACK_WEBHOOK_URL")  # second round through the bot token
    d.evaluate([violation(at(400))], now=at(400))
    d.deliver_pending(now=at(400))
    assert len(receiver.messages) >= 3
    secrets = [TOKEN, receiver.webhook_url, "XXXXXXXXXXXXXXXXXXXXXXXX", hook_url, "very-secret-hook"]
    columns = store.query_df(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE data_type IN ('VARCHAR', 'JSON') AND table_schema = 'main'")
    assert {"destination", "payload", "last_error", "message"} <= set(columns["column_name"])
    with store.connect() as con:
        for table, column in columns.itertuples(index=False):
            stored = [v for (v,) in con.execute(f"SELECT CAST({column} AS VARCHAR) FROM {table}").fetchall() if v]
            for secret in secrets:
                assert not any(secret in v for v in stored), f"{secret!r} found in {table}.{column}"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "not delivered" in logged  # the failures were logged...
    assert not any(s in logged for s in secrets)  # ...without their secrets


def test_interrupted_send_is_retried_after_its_lease(store: Store, receiver: SlackReceiver,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    d = make(store, receiver, lease_s=120)
    d.evaluate([violation(at(0))], now=at(0))
    [claimed] = d.outbox.claim_due(at(0))  # a process that claimed, then died before marking
    assert rows(store)[0]["status"] == "sending"
    assert d.deliver_pending(now=at(60)).delivered == 0  # its lease still runs: not sent twice
    assert receiver.requests == []
    assert d.deliver_pending(now=at(121)).delivered == 1
    [row] = rows(store)
    assert row["status"] == "delivered" and row["last_error"] == INTERRUPTED
    assert claimed.dedupe_key == row["dedupe_key"]


def test_concurrent_deliverers_send_each_row_once(store: Store, receiver: SlackReceiver,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
    rules = [AlertRule(condition=f"s{i} > 300") for i in range(8)]
    make(store, receiver, *rules).evaluate([violation(at(0), name=f"s{i}") for i in range(8)], now=at(0))
    reports = []

    def run() -> None:
        reports.append(make(store, receiver, *rules).deliver_pending(now=at(1)))

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sum(r.delivered for r in reports) == 8
    assert len(receiver.messages) == 8
    assert len({m.text for m in receiver.messages}) == 8


def test_store_is_free_while_a_send_is_in_flight(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    delay = 2.0
    with SlackReceiver(token=TOKEN, delay_s=delay) as slow:
        monkeypatch.setenv("SLACK_BOT_TOKEN", TOKEN)
        d = make(store, slow)
        d.evaluate([violation(at(0))], now=at(0))
        worker = threading.Thread(target=d.deliver_pending, kwargs={"now": at(0)})
        worker.start()
        deadline = time.monotonic() + 5
        while store.scalar("SELECT status FROM alert_outbox") != "sending" and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        store.execute("CREATE TABLE IF NOT EXISTS scratch (x INTEGER)")  # needs the exclusive lock
        waited = time.monotonic() - started
        worker.join(timeout=10)
        assert waited < delay / 2, f"a writer waited {waited:.2f}s while Slack took {delay}s to answer"
        assert store.scalar("SELECT status FROM alert_outbox") == "delivered"
        store.execute("DROP TABLE scratch")


def test_payload_is_valid_json_with_blocks(store: Store, receiver: SlackReceiver) -> None:
    d = make(store, receiver)
    d.evaluate([violation(at(0))], now=at(0))
    payload = json.loads(rows(store)[0]["payload"])
    assert [b["type"] for b in payload["blocks"]] == ["header", "section", "context"]
    assert payload["text"] == rows(store)[0]["message"]
