"""The select step of one feature: best of N, behavioural consensus, the coverage floor.

Attempts are ranked by the ``BestOfNSelector``; the top ``consensus_top_k`` are then replayed in
fresh sandboxes (their diff applied to the base) on one shared pool of tests: the repository's
own test files plus the test files each of them wrote. Identical diffs run once. Their
agreement on that pool is the consensus; without it the single best attempt is kept and the run
is flagged for review. A winner must pass (``AgentAttempt.passed``, the verdict the runner
recorded, so an attempt whose agent ended in an error never ships however green its tests) and
reach the coverage floor.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fibreflow.autopilot.build import is_test_file, repo_tests
from fibreflow.build.attempt import AgentAttempt
from fibreflow.config import SelectionSettings
from fibreflow.errors import AutopilotError, FibreflowError
from fibreflow.selection import Behaviour, BestOfNSelector
from fibreflow.store import Store

CANDIDATE_DIFF = ".fibreflow/candidate.diff"
_NEW_FILE = re.compile(r"^\+\+\+ b/(.+)$", re.MULTILINE)


def choose_winner(attempts: list[AgentAttempt], *, settings: SelectionSettings, coverage_floor: float,
                  pool: Any = None) -> dict[str, Any]:
    """Select among ``attempts``; ``pool(top) -> Behaviour | None`` replays the top ones. Returns the
    select step's detail; raises AutopilotError (with that detail) when nothing may ship."""
    selector = BestOfNSelector(settings)
    behaviour: Behaviour | None = None
    pool_note = None
    if pool is not None and attempts:
        top = [a for a, _ in selector.rank(attempts)[:settings.consensus_top_k]]
        try:
            behaviour = pool(top)
        except FibreflowError as exc:  # consensus falls back to diff similarity
            pool_note = f"shared test pool could not run: {exc}"
    selection = selector.select_best(attempts, behaviour=behaviour)
    winner = selection.winner
    passing = sum(1 for a in attempts if a.passed)
    detail: dict[str, Any] = {
        "winner": winner.attempt_id if winner else None, "reason": selection.reason,
        "needs_review": selection.needs_review, "consensus": selection.consensus.to_dict(),
        "scores": [s.to_dict() for s in selection.scores[:5]], "passing": passing, "attempts": len(attempts),
        "coverage_floor": coverage_floor, "pool_note": pool_note}
    if winner is None or not winner.passed:
        raise AutopilotError(f"no attempt passed its tests ({passing} of {len(attempts)} passed)",
                             step="select", detail=detail)
    coverage = winner.test_coverage
    detail.update({"coverage": coverage, "tests_passed": winner.tests_passed, "tests_failed": winner.tests_failed,
                   "cost_usd": winner.cost_usd, "agent": winner.agent, "tier": winner.tier,
                   "diff_chars": len(winner.diff)})
    if coverage_floor > 0:
        if coverage is None:
            raise AutopilotError(f"the coverage of {winner.attempt_id} was not measured, so the coverage floor "
                                 f"{coverage_floor:.0%} cannot be met (a plain pytest test command reports it; "
                                 "selection.coverage_floor: 0 ships without)", step="select", detail=detail)
        if coverage < coverage_floor:
            raise AutopilotError(f"coverage {coverage:.1%} of the winner {winner.attempt_id} is below the floor "
                                 f"{coverage_floor:.0%} (selection.coverage_floor)", step="select", detail=detail)
    return detail


class ReplayPool:
    """Replays attempts in fresh sandboxes over the base and runs the shared test pool there."""

    def __init__(self, store: Store, base: Path, *, feature_id: str, run_id: str, backend: str,
                 profile: str) -> None:
        self.store, self.base, self.feature_id = store, base, feature_id
        self.run_id, self.backend, self.profile = run_id, backend, profile

    def __call__(self, attempts: list[AgentAttempt]) -> Behaviour | None:
        from fibreflow.sandbox.manager import SandboxManager
        from fibreflow.selection.pool import SandboxTestPool

        if len(attempts) < 2:
            return None
        reps: dict[str, AgentAttempt] = {}
        for attempt in attempts:
            reps.setdefault(attempt.diff, attempt)
        manager = SandboxManager(store=self.store, repo=self.base, backend=self.backend, run_id=self.run_id)
        sandboxes: dict[str, Any] = {}
        try:
            for diff, rep in reps.items():
                sandbox = manager.create_sandbox(self.feature_id, self.profile)
                sandboxes[rep.attempt_id] = sandbox
                if diff.strip():
                    sandbox.write_files({CANDIDATE_DIFF: diff})
                    applied = sandbox.run(f"git apply --whitespace=nowarn {CANDIDATE_DIFF}", timeout=60)
                    if not applied.ok:
                        raise AutopilotError(f"the diff of {rep.attempt_id} does not apply to the base: "
                                             f"{applied.stderr.strip()[:300]}")
                rep.artifacts["tests"] = {p: sandbox.read_file(p) for p in written_tests(diff)}
            found = SandboxTestPool(sandboxes, feature_tests=repo_tests(self.base))(list(reps.values()))
        finally:
            for sandbox in sandboxes.values():
                manager.cleanup_sandbox(sandbox)
        outcomes = {a.attempt_id: found.outcomes[reps[a.diff].attempt_id] for a in attempts
                    if reps[a.diff].attempt_id in found.outcomes}
        passed = {a.attempt_id: found.pool_tests[reps[a.diff].attempt_id] for a in attempts
                  if reps[a.diff].attempt_id in found.pool_tests}
        return Behaviour(outcomes=outcomes, pool_tests=passed) if outcomes else None


def written_tests(diff: str) -> list[str]:
    """Test files a diff creates or changes (deleted ones excluded)."""
    return sorted({p for p in _NEW_FILE.findall(diff) if is_test_file(p)})


__all__ = ["ReplayPool", "choose_winner", "written_tests"]
