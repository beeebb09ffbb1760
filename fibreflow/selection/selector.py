"""Best-of-N selection: score attempts, rank them, check the top ones agree, pick a winner.

Ranking is lexicographic, so a failing attempt never outranks a passing one: first whether it
passed (``AgentAttempt.passed``, the runner's own verdict, so an attempt whose agent ended in an
error ranks as failing even when its tests are green), then its tests' pass rate; among the
attempts on the top rung, the support of their behaviour cluster when behaviour on a shared pool
is known (independent attempts that behave alike are likelier right); then the weighted score
(coverage, tests passed, code quality, speed, with weights from the ``selection`` config).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fibreflow.build.attempt import AgentAttempt
from fibreflow.config import SelectionSettings, load_settings
from fibreflow.selection.behaviour import Behaviour, cluster_support, diff_similarity, unanimity
from fibreflow.selection.quality import code_quality

BehaviourRunner = Callable[[Sequence[AgentAttempt]], Behaviour]
"""Runs attempts on one shared pool of tests or inputs and reports what each did."""

COMPONENTS = ("coverage", "tests_passed", "code_quality", "speed")


@dataclass(frozen=True)
class AttemptScore:
    """One attempt's score: the weighted total, its parts, and the ranking facts before it."""

    attempt_id: str
    total: float
    components: dict[str, float]
    passing: bool
    pass_rate: float
    support: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"attempt_id": self.attempt_id, "total": round(self.total, 4), "passing": self.passing,
                "pass_rate": round(self.pass_rate, 4), "support": self.support,
                "components": {k: round(v, 4) for k, v in self.components.items()}}


@dataclass(frozen=True)
class Consensus:
    """Whether the top attempts agree, how much, and how that was measured."""

    agreed: bool
    agreement: float
    members: tuple[str, ...]
    method: str  # behaviour, diff or none
    threshold: float
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"agreed": self.agreed, "agreement": round(self.agreement, 4), "members": list(self.members),
                "method": self.method, "threshold": self.threshold, "detail": self.detail}


@dataclass
class Selection:
    """The winner (None without attempts), every score best first, and whether a human must look."""

    winner: AgentAttempt | None
    scores: list[AttemptScore]
    consensus: Consensus
    needs_review: bool
    reason: str
    behaviour: Behaviour | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"winner": self.winner.attempt_id if self.winner else None, "needs_review": self.needs_review,
                "reason": self.reason, "consensus": self.consensus.to_dict(),
                "scores": [s.to_dict() for s in self.scores]}


class BestOfNSelector:
    """Scores and selects among N attempts at one feature."""

    def __init__(self, settings: SelectionSettings | None = None, *, size_exponent: float = 0.5) -> None:
        self.settings = settings if settings is not None else load_settings().selection
        self.size_exponent = size_exponent
        w = self.settings.weights
        self.weights = {"coverage": w.coverage, "tests_passed": w.tests_passed,
                        "code_quality": w.code_quality, "speed": w.speed}

    # -- scoring --------------------------------------------------------------------------

    def score_attempt(self, attempt: AgentAttempt, *, fastest: float | None = None,
                      measured: set[str] | None = None) -> AttemptScore:
        """Weighted score in [0, 1]. Parts nobody measured (no coverage, no ruff, no timings) are
        left out and the remaining weights renormalized; ``measured`` names the parts measured
        for some attempt of the set, which then count 0 where missing."""
        _measure_quality(attempt)
        parts = _parts(attempt, fastest)
        use = measured if measured is not None else {k for k, v in parts.items() if v is not None}
        use = {k for k in use if self.weights[k] > 0}
        total_w = sum(self.weights[k] for k in use)
        comps = {k: float(parts[k] or 0.0) for k in sorted(use)}
        total = sum(self.weights[k] * comps[k] for k in use) / total_w if total_w else 0.0
        return AttemptScore(attempt.attempt_id, total, comps, attempt.passed, attempt.pass_rate)

    def rank(self, attempts: Sequence[AgentAttempt], *,
             behaviour: Behaviour | None = None) -> list[tuple[AgentAttempt, AttemptScore]]:
        """Attempts best first (see the module docstring for the order); ties keep input order."""
        if not attempts:
            return []
        for attempt in attempts:
            _measure_quality(attempt)
        times = [a.execution_time for a in attempts if a.execution_time]
        fastest = min(times) if times else None
        measured = {k for a in attempts for k, v in _parts(a, fastest).items() if v is not None}
        scores = [self.score_attempt(a, fastest=fastest, measured=measured) for a in attempts]
        top = max((s.passing, s.pass_rate) for s in scores)
        support: dict[str, float] = {}
        rung = [a.attempt_id for a, s in zip(attempts, scores, strict=True) if (s.passing, s.pass_rate) == top]
        if behaviour is not None and all(aid in behaviour.outcomes for aid in rung):
            support = cluster_support(behaviour, rung, size_exponent=self.size_exponent)
        scored = [(a, AttemptScore(**{**s.__dict__, "support": support.get(a.attempt_id)}))
                  for a, s in zip(attempts, scores, strict=True)]
        order = sorted(range(len(scored)), key=lambda i: (
            scored[i][1].passing, scored[i][1].pass_rate, scored[i][1].support or 0.0, scored[i][1].total),
            reverse=True)
        return [scored[i] for i in order]  # sorted() is stable under reverse=True

    # -- consensus and selection ----------------------------------------------------------

    def validate_consensus(self, attempts: Sequence[AgentAttempt], *, runner: BehaviourRunner | None = None,
                           behaviour: Behaviour | None = None, ranked: bool = False) -> Consensus:
        """Do the top ``consensus_top_k`` attempts agree on at least ``consensus_threshold`` of a
        shared pool? Behaviour (from ``behaviour`` or by calling ``runner`` on the top attempts)
        decides; the similarity of their diffs is the fallback when nothing can be run."""
        k, threshold = self.settings.consensus_top_k, self.settings.consensus_threshold
        top = list(attempts[:k]) if ranked else [a for a, _ in self.rank(attempts, behaviour=behaviour)[:k]]
        ids = tuple(a.attempt_id for a in top)
        if len(top) < k:
            return Consensus(False, 0.0, ids, "none", threshold, f"only {len(top)} attempt(s), {k} needed")
        if behaviour is None and runner is not None:
            behaviour = runner(top)
        if behaviour is not None and all(a in behaviour.outcomes and behaviour.outcomes[a] for a in ids):
            agreement = unanimity(behaviour, ids)
            return Consensus(agreement >= threshold, agreement, ids, "behaviour", threshold,
                             f"same outcome on {agreement:.0%} of {len(behaviour.outcomes[ids[0]])} pool items")
        if all(a.diff for a in top):
            agreement = diff_similarity([a.diff for a in top])
            return Consensus(agreement >= threshold, agreement, ids, "diff", threshold,
                             f"least pairwise diff similarity {agreement:.0%} (nothing could be run)")
        return Consensus(False, 0.0, ids, "none", threshold, "no behaviour and no diffs to compare")

    def select_best(self, attempts: Sequence[AgentAttempt], *, runner: BehaviourRunner | None = None,
                    behaviour: Behaviour | None = None) -> Selection:
        """Rank, check consensus and pick the winner; without consensus the single best attempt is
        kept and the selection is flagged for human review."""
        if behaviour is None and runner is not None and attempts:
            behaviour = runner(attempts)
        ranked = self.rank(attempts, behaviour=behaviour)
        consensus = self.validate_consensus([a for a, _ in ranked], behaviour=behaviour, ranked=True)
        if not ranked:
            return Selection(None, [], consensus, True, "no attempts to select from", behaviour)
        winner, best = ranked[0]
        if not best.passing:
            reason = f"no attempt passed its tests; best was {winner.attempt_id} ({best.pass_rate:.0%} passed)"
        elif consensus.agreed:
            reason = f"{winner.attempt_id} passes its tests and the top {len(consensus.members)} agree"
        else:
            reason = f"{winner.attempt_id} kept as the single best; no consensus: {consensus.detail}"
        return Selection(winner, [s for _, s in ranked], consensus,
                         not (best.passing and consensus.agreed), reason, behaviour)


def _measure_quality(attempt: AgentAttempt) -> None:
    if attempt.code_quality_score is None and attempt.diff:
        attempt.code_quality_score = code_quality(attempt.diff)


def _parts(attempt: AgentAttempt, fastest: float | None) -> dict[str, float | None]:
    coverage = attempt.test_coverage
    if coverage is not None and coverage > 1.0:
        coverage /= 100.0  # given as a percentage
    speed = None
    if attempt.execution_time and fastest:
        speed = min(1.0, fastest / attempt.execution_time)
    return {"coverage": coverage, "tests_passed": attempt.pass_rate,
            "code_quality": attempt.code_quality_score, "speed": speed}


def validate_consensus(attempts: Sequence[AgentAttempt], *, runner: BehaviourRunner | None = None,
                       behaviour: Behaviour | None = None) -> Consensus:
    """``BestOfNSelector().validate_consensus`` with the configured settings."""
    return BestOfNSelector().validate_consensus(attempts, runner=runner, behaviour=behaviour)


def select_best(attempts: Sequence[AgentAttempt], *, runner: BehaviourRunner | None = None,
                behaviour: Behaviour | None = None) -> Selection:
    """``BestOfNSelector().select_best`` with the configured settings."""
    return BestOfNSelector().select_best(attempts, runner=runner, behaviour=behaviour)
