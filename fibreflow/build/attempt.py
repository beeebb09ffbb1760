"""One attempt of the parallel runner, and the records a run returns.

``run_attempt`` is what a worker thread does: sandbox -> agent -> tests -> results -> cleanup,
and one row in ``attempts`` queued in ``finally`` so a failure still leaves its record. An
attempt passes when its tests pass (exit code 0, no failures or errors) and its agent did not
end in an error; a sandbox that breaks fails that attempt only, never the run.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fibreflow.agents import Agent, AttemptOutcome, AttemptTask
from fibreflow.build.features import Feature
from fibreflow.clock import utc_now
from fibreflow.errors import FibreflowError

_LOG_CHARS = 20_000



@dataclass
class AttemptResult:
    """What one attempt did; ``status`` is passed, failed or error."""

    attempt_id: str
    feature_id: str
    attempt_index: int
    iteration: int
    tier: str | None
    agent: str
    status: str = "error"
    agent_status: str | None = None
    sandbox_id: str | None = None
    exit_code: int | None = None
    tests_passed: int = 0
    tests_failed: int = 0
    tests_errors: int = 0
    coverage: float | None = None
    cost_usd: float = 0.0
    duration_s: float = 0.0
    error: str | None = None
    killed_reason: str | None = None
    diff: str = ""
    log: str = ""
    started_at: dt.datetime = field(default_factory=utc_now)
    ended_at: dt.datetime | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def row(self, run_id: str) -> dict[str, Any]:
        """The ``attempts`` table row (``cost_usd`` is the agent's model cost; sandbox cost is in
        ``sandbox_sessions``)."""
        return {"attempt_id": self.attempt_id, "run_id": run_id, "feature_id": self.feature_id,
                "iteration": self.iteration, "agent": self.agent, "tier": self.tier,
                "sandbox_id": self.sandbox_id, "status": self.status, "exit_code": self.exit_code,
                "tests_passed": self.tests_passed, "tests_failed": self.tests_failed,
                "coverage": self.coverage, "duration_s": round(self.duration_s, 3), "cost_usd": self.cost_usd,
                "killed_reason": self.killed_reason, "error": self.error, "diff": self.diff,
                "log": self.log[-_LOG_CHARS:], "started_at": self.started_at, "ended_at": self.ended_at}


@dataclass
class FeatureResult:
    """A feature's attempts and how it ended: passed, failed, skipped (or pending)."""

    feature: Feature
    status: str = "pending"
    reason: str | None = None
    solved_tier: str | None = None
    attempts: list[AttemptResult] = field(default_factory=list)

    @property
    def passed_count(self) -> int:
        return sum(1 for a in self.attempts if a.passed)

    def to_dict(self) -> dict[str, Any]:
        return {"feature_id": self.feature.id, "status": self.status, "passed": self.passed_count,
                "attempts": len(self.attempts), "reason": self.reason, "solved_tier": self.solved_tier,
                "cost_usd": round(sum(a.cost_usd for a in self.attempts), 6),
                "passing_attempts": [a.attempt_id for a in self.attempts if a.passed]}


@dataclass
class RunResult:
    """A whole build: every feature with its attempts."""

    run_id: str
    status: str
    features: list[FeatureResult]
    duration_s: float
    backend: str = "local"
    workers: int = 1

    @property
    def ok(self) -> bool:
        """Every feature has a passing attempt."""
        return all(f.status == "passed" for f in self.features)

    def feature(self, feature_id: str) -> FeatureResult:
        return next(f for f in self.features if f.feature.id == feature_id)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": self.status, "passed": self.ok,
                "duration_s": round(self.duration_s, 3), "backend": self.backend, "workers": self.workers,
                "features": [f.to_dict() for f in self.features]}


def run_attempt(manager: Any, record: Callable[[str, dict[str, Any]], None], task: AttemptTask, agent: Agent, *,
                profile: str, test_command: str) -> AttemptResult:
    """Sandbox -> agent -> tests -> results -> cleanup for one attempt; never raises for a failure.

    ``record(table, row)`` stores the attempt's row (the runner passes its ``BatchWriter.put``).
    """
    result = AttemptResult(task.attempt_id, task.feature_id, task.attempt_index, task.iteration, task.tier,
                           getattr(agent, "name", type(agent).__name__))
    started = time.monotonic()
    sandbox = None
    outcome: AttemptOutcome | None = None
    try:
        sandbox = manager.create_sandbox(task.feature_id, profile, attempt_id=task.attempt_id)
        result.sandbox_id = sandbox.id
        outcome = manager.execute_feature(sandbox, task, agent)
        result.agent_status, result.cost_usd = outcome.status, outcome.cost_usd
        found = manager.extract_results(sandbox, test_command=test_command)
        _take_results(result, found, outcome)
    except Exception as exc:  # a broken sandbox or agent fails this attempt, not the run
        result.status = "error"
        result.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, FibreflowError) else str(exc)
    finally:
        if sandbox is not None:
            try:
                manager.cleanup_sandbox(sandbox, outcome=result.status)
            except Exception as exc:
                result.error = (result.error + "; " if result.error else "") + f"cleanup failed: {exc}"
        result.duration_s = time.monotonic() - started
        result.ended_at = utc_now()
        record("attempts", result.row(task.run_id))
    return result


def _take_results(result: AttemptResult, found: Any, outcome: AttemptOutcome) -> None:
    test = found.test_result
    result.tests_passed = int(found.tests_passed or 0)
    result.tests_failed = int(found.tests_failed or 0)
    result.tests_errors = int(found.tests_errors or 0)
    result.coverage = found.coverage
    result.diff = found.diff or ""
    result.log = found.logs if isinstance(found.logs, str) else "\n".join(map(str, found.logs or []))
    result.exit_code = None if test is None else test.exit_code
    result.killed_reason = None if test is None else test.killed_reason
    tests_ok = bool(found.tests_ok)
    if outcome.status == "error":
        result.status, result.error = "error", outcome.error or "the agent failed"
    elif tests_ok:
        result.status = "passed"
    else:
        result.status = "failed"
        result.error = outcome.error if outcome.status != "completed" else None
        if result.error is None and test is not None and test.killed:
            result.error = f"tests killed: {test.killed_reason}"

