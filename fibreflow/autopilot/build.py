"""The build step of one feature: N sandboxed attempts with the knowledge base in the loop.

Before the attempts, the patterns learned from earlier failures that fit this agent and feature
go to every attempt as its "known pitfalls" (the runner's ``learnings`` hook); after them, each
failing attempt's executed evidence is stored in the knowledge base and every shown pattern is
scored by how the attempt went. Attempts are read back from the ``attempts`` table
(``AgentAttempt.from_row``), so learning, and the selection after a resumed run, see exactly
what the build recorded, verdict included.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from fibreflow.agents import Agent, get_agent
from fibreflow.autopilot.options import AutopilotOptions
from fibreflow.build.attempt import AgentAttempt
from fibreflow.build.features import Feature, FeatureList
from fibreflow.build.progress import ProgressCallback
from fibreflow.errors import AgentError
from fibreflow.learning import FailureKnowledgeBase, LearningContext
from fibreflow.store import Store


class AgentFactory:
    """Builds agents by name from the run's options and closes the ones it built."""

    def __init__(self, options: AutopilotOptions, *, store: Store, given: Agent | None = None) -> None:
        self.options = options
        self.store = store
        self.given = given
        self.made: list[Any] = []

    def __call__(self, name: str) -> Agent:
        if self.given is not None and name == getattr(self.given, "name", None):
            return self.given
        o = self.options
        if name == "command":
            if not o.agent_command:
                raise AgentError("the command agent needs a command: --agent-command CMD (agent_command=)")
            agent = get_agent("command", command=o.agent_command, timeout=o.agent_timeout)
        elif name == "claude":
            extra = {"script": o.agent_script} if o.agent_script else {}
            agent = get_agent("claude", offline=o.offline, store=self.store, timeout_s=o.agent_timeout, **extra)
        else:
            agent = get_agent(name)
        self.made.append(agent)
        return agent

    def close(self) -> None:
        """Close agents that hold a client or a scripted server."""
        for agent in self.made:
            close = getattr(agent, "close", None)
            if callable(close):
                close()
        self.made.clear()


def run_feature(store: Store, repo: Path, feature: Feature, *, goal: str | None, runner_run_id: str,
                agents: AgentFactory, attempts: int, workers: int | None, backend: str, profile: str,
                progress: ProgressCallback | None = None, iterations: int = 2,
                escalate_to: str | None = None) -> dict[str, Any]:
    """Run ``attempts`` attempts at ``feature`` on the files of ``repo``; the build step's detail.
    With ``escalate_to`` the feature climbs the tier ladder up to that tier (``TierLadder``)."""
    from fibreflow.build.escalation import TierLadder
    from fibreflow.build.runner import ParallelRunner
    from fibreflow.build.tiers import implementation
    from fibreflow.models.pricing import Pricing
    from fibreflow.models.routing import ModelRouter

    kb = FailureKnowledgeBase(store)
    # a logical agent ("vps-monitor") only picks the tier through its rule: the run's agent does the work
    agent_name = implementation(feature) or agents.options.agent or "claude"
    agent = agents(agent_name)
    shown: list[str] = []

    def learnings(f: Feature) -> list[str]:
        found = kb.get_relevant_learnings(LearningContext(agent=agent_name, feature_text=f.task_description()))
        shown[:] = [item.pattern_id for item in found]
        return [item.as_prompt() for item in found]

    # dependencies are already in the base commit this feature builds on
    logical = None if implementation(feature) else feature.agent
    alone = FeatureList((dataclasses.replace(feature, dependencies=(), agent=logical),), goal=goal,
                        source=f"autopilot:{feature.id}")
    router = ModelRouter()
    model = agents.options.model
    override = router.resolve_override(model, pricing=Pricing.load(router.settings.models.pricing_path)) \
        if model else None
    ladder = TierLadder(escalate_to, router=router) if escalate_to and override is None else None
    stored: list[str] = []

    def learn(f: Feature, results: list[AgentAttempt]) -> None:
        # failures of this iteration are learned before the next iteration asks for learnings
        ids = {r.attempt_id for r in results}
        tried = [a for a in load_attempts(store, runner_run_id, f) if a.attempt_id in ids]
        stored.extend(p for p in learn_from(kb, tried, shown) if p not in stored)

    runner = ParallelRunner(store, repo, agent=agent, backend=backend, profile=profile, attempts=attempts,
                            workers=workers, run_id=runner_run_id, progress=progress, agent_factory=agents,
                            learnings=learnings, after_iteration=learn, iterations=iterations,
                            escalate=ladder, router=router, override=override,
                            data_gate=_data_gate(store, alone, agents.options.data_policy),
                            budget=_budget(store))
    result = runner.run(alone)
    f = result.features[0]
    return {"runner_run_id": runner_run_id, "agent": agent_name, "attempts": len(f.attempts),
            "passed": f.passed_count, "status": f.status, "reason": f.reason,
            "cost_usd": round(sum(a.cost_usd for a in f.attempts), 6), "duration_s": round(result.duration_s, 3),
            "learnings_shown": shown, "patterns_stored": stored, "workers": runner.workers,
            "solved_tier": f.solved_tier}


def _data_gate(store: Store, features: FeatureList, policy: Any) -> Any:
    """The SLA gate before the feature's attempts (None when it needs no data); as a plain build's."""
    from fibreflow.config import load_settings
    from fibreflow.models.pricing import resolve_path
    from fibreflow.sla.config import load_sla_config
    from fibreflow.sla.feature_gate import FreshDataGate, check_needs_data, needed

    if not needed(features):
        return None
    settings = load_settings()
    path = resolve_path(settings.sla.config_path)
    config = load_sla_config(path, settings=settings) if path.is_file() else None
    check_needs_data(features, config, config_path=str(path))
    assert config is not None  # check_needs_data refused every name without one
    return FreshDataGate(config, store=store, policy=policy)


def _budget(store: Store) -> Any:
    """The budget guard with its alerts (None without limits); as a plain build's."""
    from fibreflow.build.budget import Budget
    from fibreflow.config import load_settings
    from fibreflow.sla.budget_alerts import budget_alerter

    settings = load_settings()
    if settings.budget.daily_usd is None and settings.budget.monthly_usd is None:
        return None
    return Budget(store, settings.budget, alert=budget_alerter(store, settings))


def learn_from(kb: FailureKnowledgeBase, attempts: list[AgentAttempt], shown: list[str]) -> list[str]:
    """Store each failure's evidence and score the shown patterns; the pattern ids stored."""
    stored: list[str] = []
    for attempt in attempts:
        if not attempt.passed:
            pid = kb.store_failure(attempt)
            if pid is not None and pid not in stored:
                stored.append(pid)
        if shown:
            kb.record_outcome(shown, attempt)
    return stored


def load_attempts(store: Store, runner_run_id: str, feature: Feature) -> list[AgentAttempt]:
    """The recorded attempts of one build, in attempt order, with the verdicts the runner stored."""
    df = store.query_df("SELECT * FROM attempts WHERE run_id = ? AND feature_id = ? ORDER BY started_at, attempt_id",
                        [runner_run_id, feature.id])
    return [AgentAttempt.from_row(r, stage="test", feature_text=feature.task_description())
            for r in df.to_dict("records")]


def is_test_file(path: str) -> bool:
    """A pytest file by its name: ``test_*.py`` or ``*_test.py``."""
    name = path.rsplit("/", 1)[-1]
    return name.endswith(".py") and (name.startswith("test_") or name.endswith("_test.py"))


def repo_tests(root: Path, *, limit: int = 100, max_bytes: int = 200_000) -> dict[str, str]:
    """The test files of an exported tree (path -> text), for the selection's shared pool."""
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(".git/") or not is_test_file(rel) or path.stat().st_size > max_bytes:
            continue
        found[rel] = path.read_text(errors="replace")
        if len(found) >= limit:
            break
    return found


__all__ = ["AgentFactory", "is_test_file", "learn_from", "load_attempts", "repo_tests", "run_feature"]
