"""The LLM client: the real anthropic SDK against the scripted server, recorded in DuckDB."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from fibreflow.clock import NO_DEADLINE, Deadline
from fibreflow.config import ModelsSettings, Settings
from fibreflow.errors import ConfigError, LLMError
from fibreflow.models.client import DEADLINE_EXCEEDED, MISSING_KEY, LLMClient
from fibreflow.models.pricing import Pricing
from fibreflow.models.scripted import ScriptedServer
from fibreflow.store import Store

KEY = "sk-ant-api03-very-secret-test-key-0123456789"
ASK = [{"role": "user", "content": "Fix the failing unit test in tests/test_sync.py and explain the bug"}]


def settings(**models: object) -> Settings:
    return Settings(models=ModelsSettings(**{"backoff_base_s": 0.01, "timeout_s": 5.0, **models}))


def client(store: Store, server: ScriptedServer, **models: object) -> LLMClient:
    return LLMClient(store=store, settings=settings(**models), base_url=server.base_url, api_key=KEY)


def rows(store: Store) -> list[dict[str, object]]:
    return store.query_df("SELECT * FROM llm_calls ORDER BY created_at, try_no").to_dict("records")


def test_a_tool_use_reply_is_routed_priced_and_recorded(store: Store) -> None:
    script = {"turns": [{"text": "Running the tests.", "tool_use": {"name": "bash", "input": {"command": "pytest -q"}}}]}
    with ScriptedServer(script) as server, client(store, server) as llm:
        msg = llm.create_message(messages=ASK, max_tokens=1024, agent="code-agent", run_id="run-1", attempt_id="a-1")
        assert msg.stop_reason == "tool_use"
        use = msg.content[1]
        assert (use.type, use.name, use.input) == ("tool_use", "bash", {"command": "pytest -q"})
        assert server.requests[0].model == "claude-sonnet-5-5"  # "fix" + "unit test" route to sonnet
    [row] = rows(store)
    assert (row["run_id"], row["attempt_id"], row["agent"], row["tier"], row["status"], row["try_no"]) == \
        ("run-1", "a-1", "code-agent", "sonnet", "ok", 1)
    assert row["input_tokens"] == msg.usage.input_tokens and row["stop_reason"] == "tool_use"
    assert row["cost_usd"] == pytest.approx(llm.last_call.cost_usd) and row["cost_usd"] > 0
    assert row["task_text"] is None  # store_prompts is off


def test_recorded_cost_equals_pricing_yaml_for_the_usage_sent(store: Store) -> None:
    usage = {"input_tokens": 1200, "output_tokens": 350, "cache_creation_input_tokens": 3000,
             "cache_read_input_tokens": 20_000,
             "cache_creation": {"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000}}
    with ScriptedServer({"default": {"text": "ok", "usage": usage}}) as server, client(store, server) as llm:
        llm.create_message(messages=ASK, max_tokens=100, tier="opus")
    [row] = rows(store)
    # claude-opus-5-5: $4 in, $20 out, $5 5m write, $8 1h write, $0.20 read, per million tokens
    expected = (1200 * 4 + 350 * 20 + 1000 * 5 + 2000 * 8 + 20_000 * 0.20) / 1e6
    assert row["model"] == "claude-opus-5-5" and row["cost_usd"] == pytest.approx(expected)
    assert expected == pytest.approx(Pricing.load().price_usage("claude-opus-5-5", usage))
    assert (row["cache_creation_input_tokens"], row["cache_read_input_tokens"]) == (3000, 20_000)


def test_retries_429_and_529_then_succeeds_with_a_row_per_try(store: Store) -> None:
    script = {"errors": [{"status": 429, "retry_after": 0}, {"status": 529}], "default": "done"}
    with ScriptedServer(script) as server, client(store, server) as llm:
        msg = llm.create_message(messages=ASK, max_tokens=100, run_id="r")
        assert msg.content[0].text == "done" and server.request_count == 3
        assert llm.last_call.tries == 3
    got = rows(store)
    assert [(r["try_no"], r["status"]) for r in got] == [(1, "rate_limited"), (2, "overloaded"), (3, "ok")]
    assert "429 rate_limit_error" in got[0]["error"] and "529 overloaded_error" in got[1]["error"]
    assert len({r["call_id"] for r in got}) == 1 and got[0]["cost_usd"] == 0


def test_gives_up_after_the_bounded_tries(store: Store) -> None:
    with ScriptedServer({"errors": [{"status": 529, "times": 10}]}) as server, \
            client(store, server, max_retries=2) as llm:
        with pytest.raises(LLMError) as err:
            llm.create_message(messages=ASK, max_tokens=100)
        assert server.request_count == 3
    assert err.value.tries == 3 and err.value.status_code == 529
    assert "after 3 tries" in str(err.value) and "overloaded_error" in str(err.value)
    assert [r["status"] for r in rows(store)] == ["overloaded"] * 3


def test_500_is_retried_and_400_is_not(store: Store) -> None:
    with ScriptedServer({"errors": [{"status": 500}, {"status": 400, "at": [3]}], "default": "x"}) as server, \
            client(store, server) as llm:
        assert llm.create_message(messages=ASK, max_tokens=100).content[0].text == "x"
        with pytest.raises(LLMError, match="400 invalid_request_error") as err:
            llm.create_message(messages=ASK, max_tokens=100)
        assert err.value.tries == 1 and server.request_count == 3
    assert [r["status"] for r in rows(store)] == ["server_error", "ok", "client_error"]


def test_retry_after_is_honoured(store: Store) -> None:
    with ScriptedServer({"errors": [{"status": 429, "retry_after": 0.4}], "default": "ok"}) as server, \
            client(store, server, backoff_base_s=0.0) as llm:
        started = time.monotonic()
        llm.create_message(messages=ASK, max_tokens=100)
        assert time.monotonic() - started >= 0.4


def test_a_server_that_never_answers_times_out(store: Store) -> None:
    with ScriptedServer({"default": "late"}, latency_s=30) as server, \
            client(store, server, timeout_s=0.3, max_retries=1) as llm:
        started = time.monotonic()
        with pytest.raises(LLMError, match="after 2 tries.*timeout"):
            llm.create_message(messages=ASK, max_tokens=100)
        assert time.monotonic() - started < 2 * 0.3 * 3 + 5  # two tries of 0.3 s, not the 30 s answer
    assert [r["status"] for r in rows(store)] == ["timeout", "timeout"]


def test_no_secret_reaches_the_store(store: Store) -> None:
    with ScriptedServer({"errors": [{"status": 401}, {"status": 529}], "default": "ok"}) as server, \
            client(store, server) as llm:
        with pytest.raises(LLMError, match="ANTHROPIC_API_KEY"):
            llm.create_message(messages=ASK, max_tokens=100)
        llm.create_message(messages=ASK, max_tokens=100)
    dump = store.query_df("SELECT * FROM llm_calls").to_string()
    assert "very-secret" not in dump and len(rows(store)) == 3
    assert b"very-secret" not in Path(store.path).read_bytes()


def test_store_prompts_keeps_the_task_text(store: Store) -> None:
    with ScriptedServer({"default": "ok"}) as server, client(store, server, store_prompts=True) as llm:
        llm.create_message(messages=ASK, max_tokens=100, task_text="list open incidents")
    [row] = rows(store)
    assert (row["task_text"], row["tier"]) == ("list open incidents", "haiku")


def test_missing_key_is_one_line_and_offline_needs_none(store: Store) -> None:
    with pytest.raises(ConfigError) as err:
        LLMClient(store=store, settings=settings())
    assert str(err.value) == MISSING_KEY and "\n" not in str(err.value)
    with LLMClient(store=store, settings=settings(), offline=True) as llm:
        assert llm.is_scripted and "scripted" in llm.describe()
        reply = llm.create_message(messages=ASK, max_tokens=200)
        assert "scripted" in reply.content[0].text
    with LLMClient(store=store, settings=settings(), offline=True, script={"default": "mine"}) as llm:
        assert llm.create_message(messages=ASK, max_tokens=20).content[0].text == "mine"


def test_an_unpriced_tier_model_fails_before_any_request(store: Store) -> None:
    with ScriptedServer({"default": "ok"}) as server, \
            client(store, server, tiers={"haiku": "claude-haiku-9"}) as llm:
        with pytest.raises(ConfigError, match=r"unknown model 'claude-haiku-9'.*pricing\.yaml"):
            llm.create_message(messages=ASK, max_tokens=10, tier="haiku")
        assert server.request_count == 0


def test_deadline_counts_down_and_the_sooner_one_wins() -> None:
    assert NO_DEADLINE.remaining_s() is None and not NO_DEADLINE.expired and NO_DEADLINE.cap(7.0) == 7.0
    soon, late = Deadline.after(0.0), Deadline.after(3600)
    assert soon.expired and soon.cap(5.0) == 0.0 and soon.describe() == "time limit of 0s"
    assert not late.expired and 3500 < (late.remaining_s() or 0) <= 3600 and late.cap(5.0) == 5.0
    assert late.earliest(soon) is soon and soon.earliest(late) is soon and late.earliest(None) is late
    assert NO_DEADLINE.earliest(late) is late and Deadline.after(None) == NO_DEADLINE


def test_a_deadline_cuts_the_try_and_no_retry_follows(store: Store) -> None:
    # the server never answers in time; 10 s per try and 2 retries would hold the call ~30 s
    with ScriptedServer({"default": "late"}, latency_s=1000) as server, \
            client(store, server, timeout_s=10, max_retries=2) as llm:
        started = time.monotonic()
        with pytest.raises(LLMError) as err:
            llm.create_message(messages=ASK, max_tokens=100, deadline=Deadline.after(1.5))
        assert time.monotonic() - started < 1.5 * 3 + 5  # the 1.5 s deadline holds
        assert server.request_count == 1  # no retry after the deadline
    assert err.value.error_type == DEADLINE_EXCEEDED and err.value.tries == 1
    assert "deadline exceeded (time limit of 1.5s ran out during the try)" in str(err.value)
    [row] = rows(store)
    assert row["status"] == "deadline_exceeded" and row["error"].startswith("deadline exceeded: no answer within")


def test_retry_sleeps_stop_at_the_deadline(store: Store) -> None:
    # retry-after asks for 30 s, more than the deadline leaves: the call stops instead of sleeping
    with ScriptedServer({"errors": [{"status": 529, "times": 10, "retry_after": 30}]}) as server, \
            client(store, server, max_retries=4) as llm:
        started = time.monotonic()
        with pytest.raises(LLMError, match=r"stopped after 1 tries: deadline exceeded .*529 overloaded") as err:
            llm.create_message(messages=ASK, max_tokens=100, deadline=Deadline.after(3))
        assert time.monotonic() - started < 3 * 3 + 5 and server.request_count == 1  # the 3 s deadline
    assert (err.value.error_type, err.value.status_code) == (DEADLINE_EXCEEDED, 529)
    [row] = rows(store)
    assert row["status"] == "overloaded" and "deadline exceeded: no retry" in row["error"]
    # retries that fit in the deadline still happen
    with ScriptedServer({"errors": [{"status": 529, "times": 2}], "default": "ok"}) as server, \
            client(store, server) as llm:
        assert llm.create_message(messages=ASK, max_tokens=100, deadline=Deadline.after(60)).content[0].text == "ok"
        assert server.request_count == 3
    with ScriptedServer({"default": "ok"}) as server, client(store, server) as llm:
        with pytest.raises(LLMError, match="ran out before try 1 was sent"):
            llm.create_message(messages=ASK, max_tokens=100, deadline=Deadline.after(0))
        assert server.request_count == 0


def test_the_offline_setting_sends_no_call_to_the_network(store: Store) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        # a real-looking key and a base URL: offline still means no network to any model API
        with LLMClient(store=store, settings=settings(offline=True, base_url=url), api_key=KEY) as llm:
            assert llm.is_scripted and url not in llm.describe()
            assert "scripted" in llm.create_message(messages=ASK, max_tokens=50).content[0].text
        with LLMClient(store=store, settings=settings(offline=True, base_url=url)) as llm:  # no key needed
            assert llm.is_scripted
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    assert [r["status"] for r in rows(store)] == ["ok"]


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_or_permission_is_not_retried(store: Store, status: int) -> None:
    with ScriptedServer({"errors": [{"status": status}], "default": "x"}) as server, \
            client(store, server, max_retries=4) as llm:
        with pytest.raises(LLMError) as err:
            llm.create_message(messages=ASK, max_tokens=100)
        assert (err.value.status_code, err.value.tries, server.request_count) == (status, 1, 1)
    assert [r["status"] for r in rows(store)] == ["client_error"]


def test_a_model_id_override_is_sent_whatever_the_tier(store: Store) -> None:
    with ScriptedServer({"default": "x"}) as server, client(store, server) as llm:
        llm.create_message(messages=ASK, max_tokens=100, tier="haiku", model_id="claude-opus-4-1")
        assert server.requests[-1].model == "claude-opus-4-1"
    assert [(r["tier"], r["model"]) for r in rows(store)] == [("haiku", "claude-opus-4-1")]
