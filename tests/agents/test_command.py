"""The command agent in real local sandboxes: task hand-over, exit codes, cost parsing, limits."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fibreflow.agents import AttemptTask, get_agent, known_agents
from fibreflow.agents.command import CommandAgent, parse_report
from fibreflow.errors import AgentError
from fibreflow.sandbox.backends import get_backend
from fibreflow.sandbox.profiles import load_profile

CLAUDE_RESULT = {"type": "result", "subtype": "success", "is_error": False, "num_turns": 3,
                 "result": "Added the function.", "session_id": "s1", "total_cost_usd": 0.0123,
                 "usage": {"input_tokens": 100, "output_tokens": 50, "cache_creation_input_tokens": 10,
                           "cache_read_input_tokens": 5}}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "repo"
    (r / "bin").mkdir(parents=True)
    (r / "app.py").write_text("def answer():\n    return 0\n")
    # a stand-in for `claude -p PROMPT --output-format json`: edits a file, prints the result object
    claude = r / "bin" / "claude"
    claude.write_text("#!/bin/sh\nprintf 'def answer():\\n    return 42\\n' > app.py\n"
                      f"echo '{json.dumps(CLAUDE_RESULT)}'\n")
    claude.chmod(0o755)
    subprocess.run(["git", "init", "-q", str(r)], check=True)
    subprocess.run(["git", "-C", str(r), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(r), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "i"],
                   check=True)
    return r


@pytest.fixture
def sandbox(repo: Path) -> Iterator:
    box = get_backend("local").create(repo, load_profile("quick"))
    yield box
    box.close()


def _task(**kw: object) -> AttemptTask:
    base = {"run_id": "run-1", "feature_id": "answer", "attempt_id": "run-1-answer-1-2",
            "description": "Make answer() return 42", "test_command": "python -m pytest -q",
            "attempt_index": 2}
    return AttemptTask(**{**base, **kw})  # type: ignore[arg-type]


def test_task_reaches_the_command_by_env_and_file(sandbox, repo: Path) -> None:
    agent = CommandAgent('test "$FIBREFLOW_TASK" = "$(sed -n 3p "$FIBREFLOW_TASK_FILE")" && '
                         'echo "attempt=$FIBREFLOW_ATTEMPT feature=$FIBREFLOW_FEATURE tier=$FIBREFLOW_MODEL_TIER" '
                         '> seen.txt')
    outcome = agent.run(_task(tier="sonnet", learnings=["run the tests first"]), sandbox)
    assert outcome.status == "completed", outcome.transcript
    assert sandbox.read_file("seen.txt") == "attempt=2 feature=answer tier=sonnet\n"
    task_md = sandbox.read_file(".fibreflow/task.md")
    assert "Make answer() return 42" in task_md and "- run the tests first" in task_md
    diff = sandbox.diff()
    assert "+++ b/seen.txt" in diff and ".fibreflow" not in diff
    assert not (repo / "seen.txt").exists()
    assert outcome.ended_at is not None and outcome.duration_s is not None and outcome.duration_s >= 0


def test_a_cli_reporting_json_cost(sandbox) -> None:
    outcome = CommandAgent('bin/claude -p "$FIBREFLOW_TASK" --output-format json').run(_task(), sandbox)
    assert outcome.status == "completed"
    assert (outcome.cost_usd, outcome.turns, outcome.tokens) == (0.0123, 3, 165)
    assert outcome.summary == "Added the function."
    assert "return 42" in sandbox.read_file("app.py")


def test_exit_code_decides_and_output_is_kept(sandbox) -> None:
    outcome = CommandAgent("echo partial; echo boom >&2; exit 4").run(_task(), sandbox)
    assert outcome.status == "failed"
    assert "exited with 4" in outcome.error and "boom" in outcome.error
    assert outcome.transcript[0]["stdout"] == "partial\n" and outcome.transcript[0]["exit_code"] == 4


def test_timeout_ends_the_attempt_as_a_limit(sandbox) -> None:
    timeout = 1
    outcome = CommandAgent("sleep 30", timeout=timeout).run(_task(), sandbox)
    assert outcome.status == "limit" and "killed" in outcome.error
    assert outcome.duration_s is not None and outcome.duration_s < timeout * 3 + 5


def test_secrets_stay_outside(sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-must-not-leak")
    outcome = CommandAgent("env").run(_task(), sandbox)
    assert outcome.status == "completed"
    assert "sk-ant-must-not-leak" not in outcome.transcript[0]["stdout"]
    assert "FIBREFLOW_TASK=Make answer() return 42" in outcome.transcript[0]["stdout"]


@pytest.mark.parametrize("stdout, expected", [
    (json.dumps(CLAUDE_RESULT), {"cost_usd": 0.0123, "turns": 3, "tokens": 165}),
    ('{"type":"system","subtype":"init"}\n{"type":"assistant"}\n' + json.dumps({**CLAUDE_RESULT, "is_error": True}),
     {"cost_usd": 0.0123, "is_error": True}),
    ("Tokens: 2.1k sent, 171 received. Cost: $0.0091 message, $0.0091 session.\n"
     "Applied edit to app.py\nTokens: 3.0k sent, 90 received. Cost: $0.02 message, $0.03 session.\n",
     {"cost_usd": 0.03}),
    ("Cost: $0.01 message\nCost: $0.02 message\n", {"cost_usd": 0.03}),
    ("plain output, no cost\n", {}),
])
def test_cost_parsing(stdout: str, expected: dict) -> None:
    report = parse_report(stdout)
    for key, value in expected.items():
        assert report[key] == pytest.approx(value)
    if not expected:
        assert report == {}


def test_a_cli_reporting_an_error_fails_even_with_exit_zero(sandbox) -> None:
    body = json.dumps({**CLAUDE_RESULT, "is_error": True, "subtype": "error_max_turns"})
    outcome = CommandAgent(f"echo '{body}'").run(_task(), sandbox)
    assert outcome.status == "failed" and outcome.cost_usd == 0.0123


def test_agents_are_chosen_by_name() -> None:
    assert "command" in known_agents()
    agent = get_agent("command", command="true", timeout=5)
    assert isinstance(agent, CommandAgent) and agent.timeout == 5
    with pytest.raises(AgentError, match=r"unknown agent 'nope'; known agents: .*command"):
        get_agent("nope")
    with pytest.raises(AgentError, match="bad options"):
        get_agent("command", comand="typo")
    with pytest.raises(AgentError, match="--agent-command"):
        CommandAgent("  ")
