"""``AgentAttempt``: one attempt at one feature, as the selector and the knowledge base see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fibreflow.learning.analysis import FailureAnalysis


@dataclass
class AgentAttempt:
    """The measured result of one attempt (the seed's fields, plus the run's evidence).

    ``test_output``, ``exit_code``, ``killed_reason`` and JUnit XML in ``artifacts`` are the
    evidence failure analysis reads; ``reflection`` is the model's own account and is never
    learned from on its own.
    """

    feature_id: str
    sandbox_id: str | None = None
    test_coverage: float | None = None
    tests_passed: int = 0
    tests_failed: int = 0
    code_quality_score: float | None = None
    execution_time: float | None = None
    artifacts: dict[str, Any] = field(default_factory=dict)
    failure_analysis: FailureAnalysis | None = None
    improvement_suggestions: list[str] = field(default_factory=list)
    learned_patterns: list[str] = field(default_factory=list)
    agent: str = ""
    attempt_id: str = ""
    run_id: str = ""
    iteration: int = 1
    diff: str = ""
    test_output: str = ""
    killed_reason: str | None = None
    exit_code: int | None = None
    tier: str | None = None
    stage: str | None = None
    feature_text: str = ""
    reflection: str = ""

    @property
    def passed(self) -> bool:
        """The run happened, exited 0, was not killed and no test failed."""
        return (self.exit_code == 0 and not self.killed_reason and self.tests_failed == 0)

    @property
    def tests_total(self) -> int:
        return self.tests_passed + self.tests_failed

    @property
    def pass_rate(self) -> float:
        """Share of tests that passed (0 when none ran)."""
        return self.tests_passed / self.tests_total if self.tests_total else 0.0
