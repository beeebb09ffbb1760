"""The claude agent: the real anthropic SDK against the scripted server, tools in a real local sandbox."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fibreflow.agents import AttemptLimits, AttemptTask, get_agent, known_agents
from fibreflow.agents.claude import CUT_NOTE, EMPTY_NUDGE, ClaudeAgent
from fibreflow.config import ModelsSettings, Settings
from fibreflow.errors import AgentError, ConfigError
from fibreflow.models.client import LLMClient
from fibreflow.models.pricing import Pricing
from fibreflow.models.scripts import DEMO_FEATURE, DEMO_REPO, script_path, write_demo_repo
from fibreflow.sandbox.backends import get_backend
from fibreflow.sandbox.local import LocalSandbox
from fibreflow.sandbox.profiles import load_profile
from fibreflow.store import Store
from fibreflow.yamlio import load_yaml

# claude-sonnet-5-5 in data/pricing.yaml, dollars per million tokens
SONNET = {"input_tokens": 2.00, "output_tokens": 10.00, "cache_creation_input_tokens": 2.50,
          "cache_read_input_tokens": 0.10}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write_demo_repo(tmp_path / "repo")


@pytest.fixture
def sandbox(repo: Path, tmp_path: Path) -> Iterator[LocalSandbox]:
    box = get_backend("local", state_dir=tmp_path / "state").create(repo, load_profile("python-tests"))
    yield box
    box.close()


def _task(**kw: Any) -> AttemptTask:
    base = {"run_id": "run-1", "feature_id": DEMO_FEATURE["id"], "attempt_id": "run-1-fix-add-0",
            "description": DEMO_FEATURE["description"], "test_command": DEMO_FEATURE["test_command"]}
    return AttemptTask(**{**base, **kw})


def _agent(store: Store, script: Any, **kw: Any) -> ClaudeAgent:
    """An agent on its own scripted server (the real SDK speaks HTTP to it)."""
    return ClaudeAgent(client=LLMClient(store=store, offline=True, script=script), **kw)


def _requests(agent: ClaudeAgent) -> list[dict[str, Any]]:
    assert agent.client.scripted is not None
    return [r.body for r in agent.client.scripted.requests if r.body is not None]


def _last_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [b for b in body["messages"][-1]["content"] if b.get("type") == "tool_result"]


def _calls(store: Store) -> list[dict[str, Any]]:
    return store.query_df("SELECT * FROM llm_calls ORDER BY created_at").to_dict("records")


def test_full_attempt_edits_in_the_sandbox_and_passes(store: Store, repo: Path, sandbox: LocalSandbox) -> None:
    task = _task(learnings=["calc.add returned a - b in an earlier run: check the operator"])
    with ClaudeAgent(offline=True, script="demo_feature", store=store) as agent:
        assert "scripted" in agent.describe()
        outcome = agent.run(task, sandbox)
        bodies = _requests(agent)
    assert (outcome.status, outcome.error, outcome.turns) == ("completed", None, 4), outcome.transcript
    assert "All tests pass" in outcome.summary
    # the model viewed, edited and ran the tests through the sandbox
    assert [b.get("name") for e in outcome.transcript if e["role"] == "assistant"
            for b in e["content"] if b["type"] == "tool_use"] == \
        ["str_replace_based_edit_tool", "str_replace_based_edit_tool", "bash"]
    assert "    return a - b" in _last_results(bodies[1])[0]["content"]  # the view's numbered listing
    assert "2 passed" in _last_results(bodies[3])[0]["content"]
    diff = sandbox.diff()
    assert "-    return a - b" in diff and "+    return a + b" in diff and "test_calc" not in diff
    assert sandbox.run(DEMO_FEATURE["test_command"], timeout=60).exit_code == 0
    # the host repository is untouched
    assert (repo / "calc.py").read_text() == DEMO_REPO["calc.py"]
    assert subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout == ""
    # the system prompt carries the feature, its test command and the learned pitfalls, cached
    system = bodies[0]["system"][0]
    assert system["cache_control"] == {"type": "ephemeral"}
    for part in ("## Feature fix-add", DEMO_FEATURE["description"], "`python -m pytest -q` must pass",
                 "## Known pitfalls", "- calc.add returned a - b"):
        assert part in system["text"]
    assert [t["name"] for t in bodies[0]["tools"]] == ["bash", "str_replace_based_edit_tool"]
    # every call is recorded and priced exactly as pricing.yaml prices the usage the server sent
    script = load_yaml(script_path("demo_feature")).data
    rows = _calls(store)
    assert len(rows) == 4
    expected = []
    for row, turn in zip(rows, script["turns"], strict=True):
        usage = turn["usage"]
        assert {k: row[k] for k in SONNET} == {k: usage[k] for k in SONNET}
        assert (row["run_id"], row["attempt_id"], row["agent"], row["tier"], row["model"], row["status"]) == \
            ("run-1", "run-1-fix-add-0", "claude", "sonnet", "claude-sonnet-5-5", "ok")
        dollars = sum(usage[k] * rate for k, rate in SONNET.items()) / 1e6
        assert row["cost_usd"] == pytest.approx(dollars, rel=1e-12)
        assert dollars == pytest.approx(Pricing.load().price_usage("claude-sonnet-5-5", usage), rel=1e-12)
        expected.append(dollars)
    assert outcome.cost_usd == pytest.approx(sum(expected), rel=1e-12)
    assert outcome.tokens == sum(row[k] for row in rows for k in SONNET)


def test_unknown_tool_is_answered_with_a_tool_error_and_the_loop_goes_on(store: Store, sandbox: LocalSandbox) -> None:
    script = {"turns": [{"tool_use": {"name": "python_exec", "input": {"code": "print(1)"}}},
                        {"text": "Switching to bash.", "tool_use": {"name": "bash", "input": {"command": "echo hi"}}},
                        {"text": "Done."}]}
    with _agent(store, script, native_tools=True) as agent:
        outcome = agent.run(_task(), sandbox)
        bodies = _requests(agent)
    assert (outcome.status, outcome.turns) == ("completed", 3)
    assert bodies[0]["tools"] == [{"type": "bash_20250124", "name": "bash"},
                                  {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}]
    [error] = _last_results(bodies[1])
    assert error["is_error"] is True
    assert "unknown tool 'python_exec'" in error["content"] and "bash, str_replace_based_edit_tool" in error["content"]
    [ok] = _last_results(bodies[2])
    assert "is_error" not in ok and ok["content"] == "hi\n[exit code 0]"


def test_malformed_tool_inputs_are_tool_errors(store: Store, sandbox: LocalSandbox) -> None:
    editor = "str_replace_based_edit_tool"
    calls = [
        ("bash", {"command": 42}, "field 'command' must be a string, got int"),
        ("bash", {}, "missing required field 'command'"),
        (editor, {"command": "view"}, "missing required field 'path'"),
        (editor, {"command": "undo_edit", "path": "calc.py"}, "unknown command 'undo_edit'"),
        (editor, {"command": "insert", "path": "calc.py", "insert_line": "2", "new_str": "x"},
         "field 'insert_line' must be an integer, got str"),
        (editor, {"command": "insert", "path": "calc.py", "insert_line": 99, "new_str": "x"}, "outside the file"),
        (editor, {"command": "create", "path": "/etc/passwd", "file_text": "x"}, "relative to the workspace"),
        (editor, {"command": "str_replace", "path": "calc.py", "old_str": "return a * b", "new_str": "x"},
         "old_str did not appear verbatim in calc.py"),
        (editor, {"command": "str_replace", "path": "tests/test_calc.py", "old_str": "def test_add", "new_str": "x"},
         "Multiple occurrences of old_str in lines [4, 8]"),
        (editor, {"command": "view", "path": "nope.py"}, "nope.py does not exist"),
        (editor, {"command": "view", "path": "calc.py", "view_range": [5, 2]}, "view_range"),
    ]
    script = {"turns": [{"tool_use": [{"name": n, "input": i} for n, i, _ in calls]}, {"text": "Giving up."}]}
    with _agent(store, script) as agent:
        outcome = agent.run(_task(), sandbox)
        bodies = _requests(agent)
    assert (outcome.status, outcome.turns) == ("completed", 2)
    results = _last_results(bodies[1])
    assert len(results) == len(calls)
    for result, (_, _, message) in zip(results, calls, strict=True):
        assert result.get("is_error") is True and message in result["content"], result
    assert sandbox.diff() == ""  # nothing was written


def test_editor_views_a_directory_and_inserts(store: Store, sandbox: LocalSandbox) -> None:
    editor = "str_replace_based_edit_tool"
    script = {"turns": [
        {"tool_use": [{"name": editor, "input": {"command": "view", "path": "/workspace"}},
                      {"name": editor, "input": {"command": "insert", "path": "calc.py", "insert_line": 0,
                                                 "new_str": "# edited by the agent"}},
                      {"name": editor, "input": {"command": "create", "path": "docs/NOTES.md", "file_text": "n\n"}},
                      {"name": editor, "input": {"command": "view", "path": "calc.py", "view_range": [1, 2]}}]},
        {"text": "Done."}]}
    with _agent(store, script) as agent:
        agent.run(_task(), sandbox)
        listing, inserted, created, view = (r["content"] for r in _last_results(_requests(agent)[1]))
    assert "./calc.py" in listing and "./tests/test_calc.py" in listing and ".git" not in listing
    assert "has been edited" in inserted and created == "File created: docs/NOTES.md"
    assert view.endswith('     1\t# edited by the agent\n     2\t"""Arithmetic helpers."""\n')
    assert sandbox.read_file("docs/NOTES.md") == "n\n"


def test_turn_limit_ends_the_attempt_and_keeps_the_transcript(store: Store, sandbox: LocalSandbox) -> None:
    script = {"default": {"text": "Looking around.", "tool_use": {"name": "bash", "input": {"command": "ls"}}}}
    with _agent(store, script, max_turns=3) as agent:
        outcome = agent.run(_task(), sandbox)
    assert outcome.status == "limit" and outcome.error == "turn limit reached: 3 of 3 model turns"
    assert [e["turn"] for e in outcome.transcript if e["role"] == "assistant"] == [1, 2, 3]
    assert sum(1 for e in outcome.transcript if e["role"] == "user" and isinstance(e["content"], list)) == 3
    assert outcome.transcript[-1] == {"role": "end", "status": "limit", "reason": outcome.error}
    assert len(_calls(store)) == 3
    with _agent(store, script) as agent:
        outcome = agent.run(_task(limits=AttemptLimits(timeout_s=0)), sandbox)
    assert (outcome.status, outcome.error, outcome.turns) == \
        ("limit", "deadline exceeded: the attempt's time limit of 0s was reached", 0)


def test_spend_limit_reached_mid_attempt_stops_before_the_next_tool(store: Store, sandbox: LocalSandbox) -> None:
    usage = {"input_tokens": 10_000, "output_tokens": 1_000, "cache_creation_input_tokens": 0,
             "cache_read_input_tokens": 0}  # $0.02 + $0.01 per call on sonnet
    script = {"default": {"tool_use": {"name": "bash", "input": {"command": "echo x >> calls.txt"}},
                          "usage": usage}}
    with _agent(store, script) as agent:
        outcome = agent.run(_task(limits=AttemptLimits(max_cost_usd=0.05)), sandbox)
    assert outcome.status == "limit"
    assert outcome.error == "spend limit reached: $0.0600 of $0.0500 after 2 turns"
    assert outcome.cost_usd == pytest.approx(0.06) and outcome.turns == 2
    assert sandbox.read_file("calls.txt") == "x\n"  # the second reply's tool call never ran
    with _agent(store, script) as agent:
        outcome = agent.run(_task(limits=AttemptLimits(max_tokens=15_000)), sandbox)
    assert outcome.status == "limit" and outcome.error == "token limit reached: 22000 of 15000 tokens after 2 turns"


def test_reply_cut_at_max_tokens_continues_then_gives_up(store: Store, sandbox: LocalSandbox) -> None:
    long_text = "word " * 400  # about 500 tokens, cut by the server at max_tokens=50
    script = {"turns": [{"text": long_text}, {"text": "Short now: done."}]}
    with _agent(store, script, max_tokens_per_reply=50) as agent:
        outcome = agent.run(_task(), sandbox)
        bodies = _requests(agent)
    assert (outcome.status, outcome.turns) == ("completed", 2)
    assert outcome.transcript[2]["stop_reason"] == "max_tokens"
    assert bodies[1]["messages"][-1]["content"][-1]["text"] == CUT_NOTE
    # a tool call in a cut reply is not run; a reply cut again and again ends the attempt
    cut = {"text": "Writing", "tool_use": {"name": "bash", "input": {"command": "touch ran"}},
           "stop_reason": "max_tokens"}
    with _agent(store, {"default": cut}, max_cut_replies=2) as agent:
        outcome = agent.run(_task(), sandbox)
        bodies = _requests(agent)
    assert outcome.status == "limit" and outcome.error == "reply cut at max_tokens (8192) 3 times in a row"
    [result] = _last_results(bodies[1])
    assert result["is_error"] is True and "cut off at max_tokens" in result["content"]
    assert sandbox.run("test -e ran", timeout=30).exit_code == 1


def test_empty_reply_is_nudged_once_then_fails(store: Store, sandbox: LocalSandbox) -> None:
    with _agent(store, {"turns": [{"content": []}, {"text": "Done."}]}) as agent:
        outcome = agent.run(_task(), sandbox)
        bodies = _requests(agent)
    assert (outcome.status, outcome.summary) == ("completed", "Done.")
    assert bodies[1]["messages"][-1]["content"][-2]["text"].startswith("Implement feature")
    assert bodies[1]["messages"][-1]["content"][-1]["text"] == EMPTY_NUDGE
    assert [m["role"] for m in bodies[1]["messages"]] == ["user"]  # no empty assistant message is sent
    with _agent(store, {"default": {"content": []}}) as agent:
        outcome = agent.run(_task(), sandbox)
    assert outcome.status == "failed" and outcome.error == "the model sent 2 empty replies in a row (stop_reason end_turn)"


def test_a_server_that_never_answers_ends_the_attempt_with_an_error(store: Store, sandbox: LocalSandbox) -> None:
    from fibreflow.models.scripted import ScriptedServer

    settings = Settings(models=ModelsSettings(timeout_s=0.3, max_retries=1, backoff_base_s=0.01))
    with ScriptedServer({"default": "too late"}, latency_s=30) as server:
        client = LLMClient(store=store, settings=settings, base_url=server.base_url, api_key="sk-test-0123456789")
        with ClaudeAgent(client=client) as agent:
            outcome = agent.run(_task(), sandbox)
        client.close()
    assert outcome.status == "error" and outcome.turns == 0
    assert outcome.error.startswith("model call failed: model call to claude-sonnet-5-5 failed after 2 tries")
    assert "(timeout)" in outcome.error and outcome.ended_at is not None
    assert [r["status"] for r in _calls(store)] == ["timeout", "timeout"]


def test_agent_is_registered_and_checks_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "claude" in known_agents()
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY is not set"):
        get_agent("claude")
    with pytest.raises(AgentError, match="unknown tier 'gpt'"):
        get_agent("claude", tier="gpt", offline=True)
    with pytest.raises(AgentError, match="needs offline=True"):
        ClaudeAgent(script="demo_feature")
    with pytest.raises(ConfigError, match="no scripted conversation 'nope'"):
        ClaudeAgent(offline=True, script="nope")


@pytest.mark.parametrize("route", ["task limits", "agent timeout_s"])
def test_the_attempt_deadline_reaches_the_model_call_and_ends_the_attempt(
        store: Store, sandbox: LocalSandbox, route: str) -> None:
    import time

    from fibreflow.models.scripted import ScriptedServer

    # 10 s per try and 2 retries: without the deadline in the call the attempt would hang ~30 s
    settings = Settings(models=ModelsSettings(timeout_s=10, max_retries=2, backoff_base_s=0.01))
    by_task = route == "task limits"
    with ScriptedServer({"default": "too late"}, latency_s=1000) as server:
        client = LLMClient(store=store, settings=settings, base_url=server.base_url, api_key="sk-test-0123456789")
        with ClaudeAgent(client=client, timeout_s=None if by_task else 2) as agent:
            started = time.monotonic()
            outcome = agent.run(_task(limits=AttemptLimits(timeout_s=2 if by_task else None)), sandbox)
            assert time.monotonic() - started < 2 * 3 + 5  # the 2 s deadline holds (not ~30 s of tries)
        client.close()
        assert server.request_count == 1  # no retry after the deadline
    assert outcome.status == "limit" and outcome.turns == 0, outcome.error
    assert outcome.error.startswith("deadline exceeded: the attempt's time limit of 2s was reached: model call to")
    assert outcome.transcript[-1] == {"role": "end", "status": "limit", "reason": outcome.error}
    assert [r["status"] for r in _calls(store)] == ["deadline_exceeded"]
