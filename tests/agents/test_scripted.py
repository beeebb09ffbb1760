"""The scripted Messages-API server, driven by the real anthropic SDK and raw HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import anthropic
import httpx
import pytest

from fibreflow.errors import ConfigError
from fibreflow.models.scripted import Script, ScriptedServer, shared_server

USER = [{"role": "user", "content": "Fix the failing test in tests/test_sync.py"}]


def sdk(server: ScriptedServer, **kw: object) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="sk-ant-test-key-0001", base_url=server.base_url, max_retries=0,
                               timeout=kw.pop("timeout", 5.0), **kw)  # type: ignore[arg-type]


def test_text_and_tool_use_replies_in_order_then_the_default() -> None:
    script = {"turns": [{"text": "Let me look.", "tool_use": {"name": "bash", "input": {"command": "pytest -q"}}},
                        {"text": "All green."}],
              "default": {"text": "Nothing left to do."}}
    with ScriptedServer(script) as server:
        client = sdk(server)
        first = client.messages.create(model="claude-sonnet-5-5", max_tokens=500, messages=USER)
        assert first.stop_reason == "tool_use" and first.model == "claude-sonnet-5-5"
        text, use = first.content
        assert isinstance(use, anthropic.types.ToolUseBlock)
        assert (text.text, use.name, use.input) == ("Let me look.", "bash", {"command": "pytest -q"})
        assert use.id.startswith("toolu_") and first.id.startswith("msg_")
        assert first.usage.input_tokens > 0 and first.usage.output_tokens > 0
        assert first.usage.cache_read_input_tokens == 0
        second = client.messages.create(model="claude-sonnet-5-5", max_tokens=500, messages=USER)
        assert (second.content[0].text, second.stop_reason) == ("All green.", "end_turn")
        third = client.messages.create(model="claude-sonnet-5-5", max_tokens=500, messages=USER)
        assert third.content[0].text == "Nothing left to do."
        assert server.request_count == 3


def test_regex_turns_match_the_last_user_message_and_tool_results() -> None:
    script = {"turns": [{"match": r"\d+ failed", "text": "Fixing the failures."}, {"text": "First."}]}
    with ScriptedServer(script) as server:
        client = sdk(server)
        result = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                                "content": "2 failed, 3 passed"}]}]
        assert client.messages.create(model="m", max_tokens=100, messages=result).content[0].text == \
            "Fixing the failures."
        assert client.messages.create(model="m", max_tokens=100, messages=USER).content[0].text == "First."


def test_usage_with_cache_fields_and_the_cut_at_max_tokens() -> None:
    usage = {"input_tokens": 120, "output_tokens": 30, "cache_creation_input_tokens": 400,
             "cache_read_input_tokens": 900,
             "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 300}}
    with ScriptedServer({"turns": [{"text": "ok", "usage": usage}, {"text": "word " * 400}]}) as server:
        client = sdk(server)
        msg = client.messages.create(model="m", max_tokens=100, messages=USER)
        assert msg.usage.cache_read_input_tokens == 900
        assert msg.usage.cache_creation.ephemeral_1h_input_tokens == 300
        cut = client.messages.create(model="m", max_tokens=10, messages=USER)
        assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 10
        assert len(cut.content[0].text) <= 40


@pytest.mark.parametrize(("status", "kind", "cls"), [(429, "rate_limit_error", anthropic.RateLimitError),
                                                     (529, "overloaded_error", anthropic.APIStatusError),
                                                     (500, "api_error", anthropic.InternalServerError)])
def test_injected_errors_have_the_api_shape(status: int, kind: str, cls: type[Exception]) -> None:
    with ScriptedServer({"errors": [{"status": status, "times": 2, "retry_after": 1}],
                         "default": "fine"}) as server:
        client = sdk(server)
        for _ in range(2):
            with pytest.raises(cls) as err:
                client.messages.create(model="m", max_tokens=10, messages=USER)
            assert err.value.status_code == status
            assert err.value.body == {"type": "error", "error": {"type": kind, "message": err.value.body["error"]["message"]}}
            assert err.value.response.headers["retry-after"] == "1"
        assert client.messages.create(model="m", max_tokens=10, messages=USER).content[0].text == "fine"


def test_fail_next_and_errors_at_given_request_numbers() -> None:
    with ScriptedServer({"errors": [{"status": 500, "at": [2]}], "default": "ok"}) as server:
        client = sdk(server)
        client.messages.create(model="m", max_tokens=10, messages=USER)
        with pytest.raises(anthropic.InternalServerError):
            client.messages.create(model="m", max_tokens=10, messages=USER)
        server.fail_next(1, status=529)
        with pytest.raises(anthropic.APIStatusError) as err:
            client.messages.create(model="m", max_tokens=10, messages=USER)
        assert err.value.status_code == 529
        assert [r.status for r in server.requests] == [200, 500, 529]


def test_latency_and_a_client_timeout() -> None:
    with ScriptedServer({"default": "slow"}, latency_s=0.3) as server:
        started = time.monotonic()
        assert sdk(server).messages.create(model="m", max_tokens=10, messages=USER).content[0].text == "slow"
        assert time.monotonic() - started >= 0.3
        server.latency_s = 5.0
        with pytest.raises(anthropic.APITimeoutError):
            sdk(server, timeout=0.3).messages.create(model="m", max_tokens=10, messages=USER)


def test_bad_requests_and_keys() -> None:
    with ScriptedServer({"default": "x"}, api_key="sk-ant-right-key") as server:
        with pytest.raises(anthropic.AuthenticationError):
            sdk(server).messages.create(model="m", max_tokens=10, messages=USER)
        headers = {"x-api-key": "sk-ant-right-key", "anthropic-version": "2023-06-01"}
        r = httpx.post(server.base_url + "/v1/messages", headers=headers, json={"model": "m", "messages": USER})
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        assert "max_tokens" in r.json()["error"]["message"]
        r = httpx.post(server.base_url + "/v1/complete", headers=headers, json={})
        assert r.status_code == 404
        ok = httpx.post(server.base_url + "/v1/messages", headers=headers,
                        json={"model": "m", "max_tokens": 5, "messages": USER})
        assert ok.json()["content"][0]["text"] == "x"
        recorded = json.dumps([r.headers for r in server.requests])
        assert "right-key" not in recorded and "test-key" not in recorded


def test_script_files_and_their_errors(tmp_path: Path) -> None:
    good = tmp_path / "script.yaml"
    good.write_text("turns:\n  - text: hi\n    tool_use: {name: str_replace_based_edit_tool, input: {command: view, path: a.py}}\n"
                    "default: bye\nerrors:\n  - {status: 529, times: 2}\n")
    script = Script.load(good)
    assert len(script.turns) == 1 and script.errors[0].times == 2 and script.default is not None
    bad = tmp_path / "bad.yaml"
    bad.write_text("turns:\n  - text: hi\n  - txet: typo\n")
    with pytest.raises(ConfigError) as err:
        Script.load(bad)
    assert f"{bad}:3" in str(err.value) and "txet" in str(err.value)
    (tmp_path / "re.json").write_text(json.dumps({"turns": [{"match": "(", "text": "x"}]}))
    with pytest.raises(ConfigError, match="regex"):
        Script.load(tmp_path / "re.json")


def test_shared_server_is_reused() -> None:
    assert shared_server() is shared_server()
    reply = sdk(shared_server()).messages.create(model="m", max_tokens=100, messages=USER)
    assert "scripted" in reply.content[0].text


def test_standalone_module(tmp_path: Path) -> None:
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"default": "standalone reply"}))
    proc = subprocess.Popen([sys.executable, "-m", "fibreflow.models.scripted", "--script", str(script)],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        url = line.split(" on ", 1)[1].split()[0]
        client = anthropic.Anthropic(api_key="k", base_url=url, max_retries=0, timeout=5)
        assert client.messages.create(model="m", max_tokens=10, messages=USER).content[0].text == "standalone reply"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_system_match_picks_a_turn_by_the_system_prompt_too(tmp_path: Path) -> None:
    import anthropic

    script = tmp_path / "s.yaml"
    script.write_text(
        "turns:\n"
        "  - {match: '^Implement', system_match: 'Known pitfalls', text: careful}\n"
        "  - {match: '^Implement', text: naive}\n")
    with ScriptedServer(Script.load(script)) as server:
        client = anthropic.Anthropic(base_url=server.base_url, api_key="k", max_retries=0)
        ask = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "Implement x"}]}
        assert client.messages.create(**ask).content[0].text == "naive"
        assert client.messages.create(system="## Known pitfalls\n- NameError", **ask).content[0].text == "careful"
    bad = tmp_path / "bad.yaml"
    bad.write_text("turns:\n  - {system_match: 'x', text: y}\n")
    with pytest.raises(ConfigError, match="system_match needs a match"):
        Script.load(bad)
