"""The ``command`` agent: runs an external coding-agent CLI, or any shell command, in the sandbox.

The task reaches the command two ways: the environment variable ``FIBREFLOW_TASK`` and the file
``.fibreflow/task.md`` in the sandbox's workspace (for CLIs that read a prompt file). Where the
CLI reports what it spent, the cost is parsed from its output:

- ``claude -p ... --output-format json`` (or ``stream-json``): the result object's
  ``total_cost_usd``, ``num_turns`` and ``usage``;
- ``aider --message ...``: the last ``Cost: $X message, $Y session.`` line.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from fibreflow.agents import AttemptOutcome, AttemptTask
from fibreflow.errors import AgentError, SandboxError
from fibreflow.sandbox.base import CommandResult, Sandbox

TASK_FILE = ".fibreflow/task.md"
_AIDER_COST = re.compile(r"Cost:\s*\$([0-9.]+)\s*message(?:,\s*\$([0-9.]+)\s*session)?", re.IGNORECASE)
_TAIL = 4000  # characters of output kept in the transcript


class CommandAgent:
    """Runs ``command`` in the sandbox's workspace; the exit code decides completed or failed."""

    name = "command"

    def __init__(self, command: str, *, timeout: float | None = None) -> None:
        if not command or not command.strip():
            raise AgentError("the command agent needs a command (--agent-command)")
        self.command = command
        self.timeout = timeout

    def run(self, task: AttemptTask, sandbox: Sandbox) -> AttemptOutcome:
        """Write the task into the sandbox, run the command there and report what it did."""
        outcome = AttemptOutcome(status="error")
        try:
            sandbox.write_files({TASK_FILE: task.prompt()})
            timeout = self.timeout if self.timeout is not None else task.limits.timeout_s
            result = sandbox.run(self.command, timeout=timeout, env=task_env(task))
        except SandboxError as exc:
            outcome.error = f"sandbox failed: {exc}"
            outcome.ended_at = dt.datetime.now(dt.UTC)
            return outcome
        _fill(outcome, result)
        outcome.ended_at = dt.datetime.now(dt.UTC)
        return outcome


def task_env(task: AttemptTask) -> dict[str, str]:
    """The environment a command agent sees: the task and where it stands, never a secret."""
    env = {
        "FIBREFLOW_TASK": task.description,
        "FIBREFLOW_TASK_FILE": TASK_FILE,
        "FIBREFLOW_RUN_ID": task.run_id,
        "FIBREFLOW_FEATURE": task.feature_id,
        "FIBREFLOW_ATTEMPT_ID": task.attempt_id,
        "FIBREFLOW_ATTEMPT": str(task.attempt_index),
        "FIBREFLOW_ITERATION": str(task.iteration),
    }
    if task.tier:
        env["FIBREFLOW_MODEL_TIER"] = task.tier
    if task.test_command:
        env["FIBREFLOW_TEST_COMMAND"] = task.test_command
    return env


def _fill(outcome: AttemptOutcome, result: CommandResult) -> None:
    outcome.transcript.append({
        "role": "command", "exit_code": result.exit_code, "duration_s": round(result.duration_s, 3),
        "stdout": result.stdout[-_TAIL:], "stderr": result.stderr[-_TAIL:],
        "killed_reason": result.killed_reason,
    })
    report = parse_report(result.stdout)
    outcome.cost_usd = report.get("cost_usd", 0.0)
    outcome.tokens = report.get("tokens", 0)
    outcome.turns = report.get("turns", 0)
    outcome.summary = report.get("summary") or _last_line(result.stdout)
    if result.killed:
        outcome.status = "limit"
        outcome.error = f"command killed: {result.killed_reason or 'limit reached'}"
    elif result.exit_code != 0 or report.get("is_error"):
        outcome.status = "failed"
        outcome.error = f"command exited with {result.exit_code}" + (
            f": {_last_line(result.stderr)}" if result.stderr.strip() else "")
    else:
        outcome.status = "completed"


def parse_report(stdout: str) -> dict[str, Any]:
    """Cost, tokens, turns and summary from a coding CLI's output, where it prints them."""
    found = _claude_result(stdout)
    if found is not None:
        usage = found.get("usage") or {}
        tokens = sum(int(usage.get(k) or 0) for k in (
            "input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))
        return {
            "cost_usd": float(found.get("total_cost_usd") or found.get("cost_usd") or 0.0),
            "turns": int(found.get("num_turns") or 0),
            "tokens": tokens,
            "summary": str(found.get("result") or "")[:500],
            "is_error": bool(found.get("is_error")),
        }
    matches = _AIDER_COST.findall(stdout)
    if matches:
        message, session = matches[-1]
        # the session figure is cumulative; without one, the messages add up
        cost = float(session) if session else sum(float(m) for m, _ in matches)
        return {"cost_usd": cost}
    return {}


def _claude_result(stdout: str) -> dict[str, Any] | None:
    """The ``type: result`` object of ``--output-format json`` or the last line of ``stream-json``."""
    text = stdout.strip()
    candidates = [text] + [line for line in reversed(text.splitlines()) if line.startswith("{")]
    for candidate in candidates:
        try:
            obj = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(obj, dict) and ("total_cost_usd" in obj or obj.get("type") == "result"):
            return obj
    return None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""
