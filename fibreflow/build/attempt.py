"""The one record of an attempt, and what a worker of the parallel runner does to fill it.

``AgentAttempt`` is shared by the runner (which fills it and stores it as an ``attempts`` row),
selection (which ranks it) and learning (which analyses its failure); it lives here, below
learning and selection, so that all of them see one record with one verdict, and
``FailureAnalysis`` sits beside it only so the record can carry learning's result without
importing learning. An attempt passes when its tests ran and exited 0 with no failures or
errors, nothing killed them, and its agent did not end in an error; ``status`` follows from that.
An attempt whose agent ended on an infrastructure error (``error_kind``: a refused key, a model
API that failed for good, no connection) is ``error``: its tests are not run, and the counts keep
it apart from attempts whose tests failed.

``run_attempt`` is what a worker thread does: sandbox -> agent -> tests -> results -> cleanup,
and one row in ``attempts`` queued in ``finally`` so a failure still leaves its record; a sandbox
that breaks fails that attempt only, never the run.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fibreflow.agents import Agent, AttemptOutcome, AttemptTask
from fibreflow.build.features import Feature
from fibreflow.clock import Deadline, utc_now
from fibreflow.errors import FibreflowError

if TYPE_CHECKING:  # the manager imports the store; the runner hands a worker its manager
    from fibreflow.sandbox.manager import SandboxManager, SandboxResults

_LOG_CHARS = 20_000


@dataclass(frozen=True)
class FailureAnalysis:
    """What went wrong: family, module at fault, normalized signature and a fix to try.

    Filled in by ``fibreflow.learning.analyze_failure``; it is a plain value that lives here only
    so the attempt record, below learning in the layers, can carry it without importing learning.
    """

    error_type: str
    affected_module: str | None
    error_pattern: str
    suggested_fix: str
    message: str = ""
    location: str | None = None
    failing_tests: tuple[str, ...] = field(default_factory=tuple)
    executed: bool = True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {"error_type": self.error_type, "affected_module": self.affected_module,
                "error_pattern": self.error_pattern, "suggested_fix": self.suggested_fix,
                "message": self.message, "location": self.location,
                "failing_tests": list(self.failing_tests), "executed": self.executed}


@dataclass
class AgentAttempt:
    """One attempt at one feature: what the runner measured, what selection scores and what the
    knowledge base learns from.

    ``passed`` is the only verdict; ``status`` (the ``attempts`` table's column) is derived from
    it. ``agent_status`` is how the agent's work ended: its own report (completed, failed, limit,
    error), or ``error`` when the agent or its sandbox raised before the tests could judge it.
    ``error_kind`` (``auth``, ``model``, ``transport``) marks an infrastructure error: the attempt
    says nothing about the feature. ``tier`` is the model tier it ran on and ``tier_reason`` why.
    ``test_output``, ``exit_code``, ``killed_reason`` and JUnit XML in ``artifacts`` are the
    evidence failure analysis reads; ``reflection`` is the model's own account and is never
    learned from on its own.
    """

    feature_id: str
    _: KW_ONLY
    attempt_id: str = ""
    run_id: str = ""
    attempt_index: int = 0
    iteration: int = 1
    tier: str | None = None
    agent: str = ""
    stage: str | None = None
    feature_text: str = ""
    agent_status: str | None = None
    cost_usd: float = 0.0
    error: str | None = None
    reflection: str = ""
    sandbox_id: str | None = None
    exit_code: int | None = None
    killed_reason: str | None = None
    tests_passed: int = 0
    tests_failed: int = 0
    tests_errors: int = 0
    test_coverage: float | None = None
    test_output: str = ""
    diff: str = ""
    execution_time: float | None = None
    started_at: dt.datetime = field(default_factory=utc_now)
    ended_at: dt.datetime | None = None
    code_quality_score: float | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)
    failure_analysis: FailureAnalysis | None = None
    improvement_suggestions: list[str] = field(default_factory=list)
    learned_patterns: list[str] = field(default_factory=list)
    tier_reason: str | None = None
    error_kind: str | None = None

    @property
    def passed(self) -> bool:
        """The tests ran and exited 0, none failed or errored, nothing killed them, and the agent
        did not end in an error."""
        return (self.exit_code == 0 and self.tests_failed == 0 and self.tests_errors == 0
                and not self.killed_reason and self.agent_status != "error")

    @property
    def status(self) -> str:
        """``passed``, ``error`` (the attempt ended in an error) or ``failed``."""
        if self.passed:
            return "passed"
        return "error" if self.agent_status == "error" else "failed"

    @property
    def infrastructure_error(self) -> bool:
        """The attempt ended on a model, transport or authentication error (``error_kind``)."""
        return self.status == "error" and self.error_kind is not None

    @property
    def tests_total(self) -> int:
        return self.tests_passed + self.tests_failed

    @property
    def pass_rate(self) -> float:
        """Share of tests that passed (0 when none ran)."""
        return self.tests_passed / self.tests_total if self.tests_total else 0.0

    def row(self, run_id: str | None = None) -> dict[str, Any]:
        """The ``attempts`` table row (``cost_usd`` is the agent's model cost; sandbox cost is in
        ``sandbox_sessions``)."""
        duration = None if self.execution_time is None else round(self.execution_time, 3)
        return {"attempt_id": self.attempt_id, "run_id": run_id or self.run_id, "feature_id": self.feature_id,
                "iteration": self.iteration, "agent": self.agent, "tier": self.tier,
                "tier_reason": self.tier_reason, "error_kind": self.error_kind,
                "sandbox_id": self.sandbox_id, "status": self.status, "exit_code": self.exit_code,
                "tests_passed": self.tests_passed, "tests_failed": self.tests_failed,
                "coverage": self.test_coverage, "duration_s": duration, "cost_usd": self.cost_usd,
                "killed_reason": self.killed_reason, "error": self.error, "diff": self.diff,
                "log": self.test_output[-_LOG_CHARS:], "started_at": self.started_at, "ended_at": self.ended_at}

    @classmethod
    def from_row(cls, row: Mapping[str, Any], **fields: Any) -> AgentAttempt:
        """The attempt an ``attempts`` row records (``row``'s inverse); ``fields`` adds what the
        table does not keep (``feature_text``, ``stage``). None and NaN (pandas' missing value)
        are missing.

        The table keeps the verdict but neither the agent's status nor the count of test errors,
        so both are read back from ``status`` to keep ``passed`` what the runner decided: ``error``
        is an attempt that ended in an error, and ``failed`` with green evidence can only have
        been failed by test errors.
        """
        def val(key: str, default: Any = None) -> Any:
            v = row.get(key)
            return default if v is None or v != v else v

        status = val("status", "failed")
        attempt = cls(
            str(row["feature_id"]), attempt_id=str(row["attempt_id"]), run_id=str(val("run_id", "")),
            iteration=int(val("iteration", 1)), tier=val("tier"), agent=str(val("agent", "")),
            tier_reason=val("tier_reason"), error_kind=val("error_kind"),
            agent_status="error" if status == "error" else None, cost_usd=float(val("cost_usd", 0.0)),
            error=val("error"), sandbox_id=val("sandbox_id"),
            exit_code=None if val("exit_code") is None else int(val("exit_code")),
            killed_reason=val("killed_reason"), tests_passed=int(val("tests_passed", 0)),
            tests_failed=int(val("tests_failed", 0)), test_coverage=val("coverage"),
            test_output=val("log", "") or "", diff=val("diff", "") or "", execution_time=val("duration_s"),
            started_at=val("started_at") or utc_now(), ended_at=val("ended_at"), **fields)
        if status == "failed" and attempt.passed:
            attempt.tests_errors = 1
        return attempt


def count_statuses(attempts: list[AgentAttempt]) -> dict[str, int]:
    """Attempts by ``status``: ``passed``, ``failed`` (the tests judged them) and ``errors`` (they
    ended in an error, infrastructure errors included: no test judged them)."""
    counts = {"passed": 0, "failed": 0, "errors": 0}
    for a in attempts:
        counts["errors" if a.status == "error" else a.status] += 1
    return counts


@dataclass
class FeatureResult:
    """A feature's attempts and how it ended: passed, failed, error (every attempt ended on an
    infrastructure error), skipped, blocked (the data gate or the budget stopped it), or pending."""

    feature: Feature
    status: str = "pending"
    reason: str | None = None
    solved_tier: str | None = None
    attempts: list[AgentAttempt] = field(default_factory=list)
    winner: AgentAttempt | None = None
    """The passing attempt whose code the features that depend on this one start from."""
    data_gate: dict[str, Any] | None = None
    """The data-freshness gate's decision before the attempts (``decision``, ``violations``)."""

    @property
    def passed_count(self) -> int:
        return sum(1 for a in self.attempts if a.passed)

    def to_dict(self) -> dict[str, Any]:
        counts = count_statuses(self.attempts)
        return {"feature_id": self.feature.id, "status": self.status, "passed": self.passed_count,
                "failed": counts["failed"], "errors": counts["errors"],
                "attempts": len(self.attempts), "reason": self.reason, "solved_tier": self.solved_tier,
                "tiers": sorted({a.tier for a in self.attempts if a.tier}),
                "cost_usd": round(sum(a.cost_usd for a in self.attempts), 6),
                "passing_attempts": [a.attempt_id for a in self.attempts if a.passed],
                "winner": self.winner.attempt_id if self.winner is not None else None,
                "data_gate": self.data_gate}


@dataclass
class RunResult:
    """A whole build: every feature with its attempts."""

    run_id: str
    status: str
    features: list[FeatureResult]
    duration_s: float
    backend: str = "local"
    workers: int = 1

    stop_reason: str | None = None
    """Why the run stopped starting attempts early (the budget), if it did."""

    @property
    def ok(self) -> bool:
        """Every feature has a passing attempt."""
        return all(f.status == "passed" for f in self.features)

    @property
    def attempts(self) -> list[AgentAttempt]:
        """Every attempt of every feature."""
        return [a for f in self.features for a in f.attempts]

    @property
    def only_infrastructure_errors(self) -> bool:
        """Attempts ran and every one ended on an infrastructure error: nothing was judged, so the
        build is a configuration or service problem (exit 2), not a failed build (exit 1)."""
        tried = self.attempts
        return bool(tried) and all(a.infrastructure_error for a in tried)

    def feature(self, feature_id: str) -> FeatureResult:
        return next(f for f in self.features if f.feature.id == feature_id)

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": self.status, "passed": self.ok,
                "duration_s": round(self.duration_s, 3), "backend": self.backend, "workers": self.workers,
                "attempt_counts": count_statuses(self.attempts), "stop_reason": self.stop_reason,
                "features": [f.to_dict() for f in self.features]}


def run_attempt(manager: SandboxManager, record: Callable[[AgentAttempt], None], task: AttemptTask,
                agent: Agent, *, profile: str, test_command: str, repo: Path | None = None) -> AgentAttempt:
    """Sandbox -> agent -> tests -> results -> cleanup for one attempt; never raises for a failure.

    ``record(attempt)`` stores the finished attempt; the runner passes
    ``fibreflow.build.records.attempt_recorder``, so the ``attempts`` table keeps one writer.
    The attempt's one ``Deadline`` starts when the agent does, from ``task.limits.timeout_s``,
    and reaches the agent (and through it every model call) as ``task.deadline``. ``repo`` is the
    tree the sandbox copies when it is not the manager's (the feature's stacked dependencies).
    """
    result = AgentAttempt(task.feature_id, attempt_id=task.attempt_id, run_id=task.run_id,
                          attempt_index=task.attempt_index, iteration=task.iteration, tier=task.tier,
                          tier_reason=task.tier_reason, agent=getattr(agent, "name", type(agent).__name__),
                          stage="test", feature_text=task.description)
    started = time.monotonic()
    sandbox = None
    outcome: AttemptOutcome | None = None
    try:
        sandbox = manager.create_sandbox(task.feature_id, profile, attempt_id=task.attempt_id, repo=repo)
        result.sandbox_id = sandbox.id
        if task.deadline is None:
            task = dataclasses.replace(task, deadline=Deadline.after(task.limits.timeout_s))
        outcome = manager.execute_feature(sandbox, task, agent)
        result.agent_status, result.cost_usd = outcome.status, outcome.cost_usd
        if outcome.status == "error" and outcome.error_kind is not None:
            # nothing was built: running the tests would only report the unchanged code as failing
            result.error_kind, result.error = outcome.error_kind, outcome.error or "the agent failed"
        else:
            found = manager.extract_results(sandbox, test_command=test_command)
            _take_results(result, found, outcome)
    except Exception as exc:  # a broken sandbox or agent fails this attempt, not the run
        result.agent_status = "error"
        result.error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, FibreflowError) else str(exc)
    finally:
        if sandbox is not None:
            try:
                manager.cleanup_sandbox(sandbox, outcome=result.status)
            except Exception as exc:
                result.error = (result.error + "; " if result.error else "") + f"cleanup failed: {exc}"
        result.execution_time = time.monotonic() - started
        result.ended_at = utc_now()
        record(result)
    return result


def _take_results(result: AgentAttempt, found: SandboxResults, outcome: AttemptOutcome) -> None:
    test = found.test_result
    result.tests_passed = int(found.tests_passed or 0)
    result.tests_failed = int(found.tests_failed or 0)
    result.tests_errors = int(found.tests_errors or 0)
    result.test_coverage = found.coverage
    result.diff = found.diff or ""
    result.test_output = found.logs if isinstance(found.logs, str) else "\n".join(map(str, found.logs or []))
    result.exit_code = None if test is None else test.exit_code
    # a kill without a stated reason still failed the run: the record must not read as green
    result.killed_reason = None if test is None else test.killed_reason or ("killed" if test.killed else None)
    if outcome.status == "error":
        result.error = outcome.error or "the agent failed"
    elif not result.passed:
        result.error = outcome.error if outcome.status != "completed" else None
        if result.error is None and result.killed_reason:
            result.error = f"tests killed: {result.killed_reason}"
