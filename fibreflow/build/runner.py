"""The parallel feature runner: N sandboxed attempts per feature, features in dependency order.

Each attempt: create a sandbox -> the agent works in it -> the feature's tests run in it (JUnit
XML and coverage, through ``SandboxManager.extract_results``) -> results are recorded -> the
sandbox is removed. Independent features and the attempts of one feature share one pool of
``workers`` threads (attempts wait on models and test runs, not on Python, so threads suffice).
A feature passes when any attempt passes; a feature whose dependency did not pass is skipped
with that reason. Nothing is written to the user's working tree: a winning attempt is only a
diff in the store until the autopilot turns it into a branch. A feature's attempts start from the
winning code of the features it depends on (``build.stacking``: a temporary tree with their
winners' diffs applied, as the autopilot's commits stack them). A feature whose every attempt
ended on an infrastructure error (a refused key, a model API down) ends ``error``: no further
round or tier is tried, since none would be judged either.

With a ``router``, each feature's tier is chosen once and recorded with its reason on every
attempt (``build.tiers``: override, pinned, agent rule, the task's words, escalation). A
``data_gate`` is asked before the attempts of a feature that declares ``needs_data``, and a
``budget`` guard before every attempt (``build.guards``); either may block, and the runner
records why.

Everything lands in DuckDB through short writes, no connection held across an attempt: ``runs``
and ``features`` through ``fibreflow.build.records``, ``attempts`` and the manager's
``sandbox_sessions`` through one batching writer of the run, handed to them as typed callbacks.

Stopping: when the coordinating thread is interrupted (KeyboardInterrupt: the CLI turns SIGINT
and SIGTERM into one) or fails, no attempt starts any more, every open sandbox is closed (its
command killed) and the runner waits up to ``STOP_GRACE_S`` for the workers to return; attempts
that finished before are kept as they are, those cut short are stored with ``killed_reason``
``cancelled``, and the run and its unfinished features end ``cancelled`` (``error`` for a
failure). ``runner.result`` then holds the partial run, and the exception propagates.

Hooks for later issues: ``learnings(feature)`` hands learned patterns to agents, and
``escalate(feature, result)`` names the next model tier when no attempt of the current one
passed (``None`` ends the feature).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING

from fibreflow.agents import Agent, AttemptLimits, AttemptTask, get_agent, known_agents
from fibreflow.build import records
from fibreflow.build.attempt import AgentAttempt, FeatureResult, RunResult, run_attempt
from fibreflow.build.features import Feature, FeatureList
from fibreflow.build.guards import BudgetGuard, DataGate
from fibreflow.build.progress import EventKind, ProgressCallback, ProgressEvent
from fibreflow.build.stacking import StackedTrees, StackError, dependency_chain, pick_winner
from fibreflow.build.tiers import choose_tier, escalated, implementation
from fibreflow.errors import AgentError, RunnerError
from fibreflow.sandbox.base import store_files
from fibreflow.sandbox.profiles import load_profile
from fibreflow.store import BatchWriter, Store

if TYPE_CHECKING:  # the manager and the settings load their dependencies only when a run needs them
    from fibreflow.config import Settings
    from fibreflow.models.routing import ModelRouter, RouteDecision
    from fibreflow.sandbox.base import SandboxBackend
    from fibreflow.sandbox.manager import SandboxManager

MAX_LOCAL_WORKERS = 64
#: feature states that stop the features depending on it
_BLOCKING = ("failed", "skipped", "error", "blocked")
STOP_GRACE_S = 10.0  # how long a stopping run waits for attempts to return once their sandboxes are closed
log = logging.getLogger(__name__)


def default_workers(backend: str, *, attempts: int, settings: Settings | None = None) -> int:
    """Workers when none are given.

    E2B: the plan's concurrency limit (``sandbox.e2b_concurrency``). Local: every attempt of a
    feature at once and at least twice the cores, because an attempt spends most of its time
    waiting on model calls rather than computing (capped at 64; memory, not CPU, is then the limit).
    """
    if backend == "e2b":
        if settings is None:
            from fibreflow.config import load_settings

            settings = load_settings()
        return max(1, settings.sandbox.e2b_concurrency)
    return max(1, min(MAX_LOCAL_WORKERS, max(attempts, 2 * (os.cpu_count() or 1))))


def new_run_id() -> str:
    """A sortable, unique run id: ``run-YYYYmmdd-HHMMSS-xxxxxx``."""
    return f"run-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M%S}-{uuid.uuid4().hex[:6]}"


class ParallelRunner:
    """Runs a feature list in sandboxes, ``attempts`` tries per feature, ``workers`` at once."""

    def __init__(self, store: Store, repo: str | Path, *, agent: Agent | str,
                 backend: str | SandboxBackend = "local", profile: str = "python-tests", attempts: int = 1, workers: int | None = None,
                 run_id: str | None = None, progress: ProgressCallback | None = None,
                 agent_factory: Callable[[str], Agent] | None = None, limits: AttemptLimits | None = None,
                 learnings: Callable[[Feature], list[str]] | None = None,
                 escalate: Callable[[Feature, FeatureResult], str | None] | None = None,
                 after_iteration: Callable[[Feature, list[AgentAttempt]], None] | None = None,
                 iterations: int = 1, router: ModelRouter | None = None, override: RouteDecision | None = None,
                 stack: bool = True, data_gate: DataGate | None = None, budget: BudgetGuard | None = None) -> None:
        if attempts < 1:
            raise RunnerError(f"attempts must be at least 1, got {attempts}")
        if workers is not None and workers < 1:
            raise RunnerError(f"workers must be at least 1, got {workers}")
        if iterations < 1:
            raise RunnerError(f"iterations must be at least 1, got {iterations}")
        self.store = store
        self.repo = Path(repo).resolve()
        if not self.repo.is_dir():
            raise RunnerError(f"repository {self.repo} is not a directory")
        self.backend = backend
        self.backend_name = backend if isinstance(backend, str) else backend.name
        self.profile = profile
        self.attempts = attempts
        self.workers = workers or default_workers(self.backend_name, attempts=attempts)
        self.run_id = run_id or new_run_id()
        self.progress = progress
        self.agent_factory = agent_factory or get_agent
        self.default_agent = self.agent_factory(agent) if isinstance(agent, str) else agent
        self.limits = limits or AttemptLimits()
        if self.limits.timeout_s is None:
            # every attempt has a deadline: the profile's wall timeout unless one was given, so a
            # hanging model API cannot hold an attempt (or a build) open for many minutes a turn
            self.limits = dataclasses.replace(self.limits, timeout_s=load_profile(profile).wall_timeout_s)
        self.learnings = learnings or (lambda feature: [])
        self.escalate = escalate or (lambda feature, result: None)
        self.after_iteration = after_iteration
        self.iterations = iterations
        self.router = router
        self.override = override
        self.stack = stack
        self.data_gate = data_gate
        self.budget = budget
        self.budget_stop: str | None = None
        """Why the budget guard stopped the run from starting attempts (None: it did not)."""
        self.result: RunResult | None = None
        """The run as it ended, also when ``run`` raised (then ``cancelled`` or ``error``)."""
        self.stopped_attempts: list[AgentAttempt] = []
        """Attempts cut short by a stop (stored with ``killed_reason`` ``cancelled``)."""
        self._stopping: str | None = None

    # -- the run -------------------------------------------------------------------------------

    def run(self, features: FeatureList) -> RunResult:
        """Run every feature; returns per-feature attempts. Never raises for a failed attempt.

        A KeyboardInterrupt (or any exception) in the coordinating thread stops the run (see the
        module docstring) and propagates; ``self.result`` keeps what the run got to.
        """
        from fibreflow.sandbox.manager import SandboxManager
        from fibreflow.sandbox.records import queue_sessions

        agents = self._agents(features)
        self._stopping, self.result, self.stopped_attempts = None, None, []
        self._started = time.monotonic()
        self._counts = {"done": 0, "passed": 0, "failed": 0, "errors": 0, "total": len(features) * self.attempts}
        results = {f.id: FeatureResult(f) for f in features}
        # attempts and sandbox sessions of all threads go through one batching writer: 15 attempts
        # ending together would otherwise queue 30 single-row transactions on the store's lock
        writer = self.store.writer(flush_interval_s=0.05)
        try:
            # the store may live anywhere, not only where the settings put it: hide its files too
            manager = SandboxManager(record_session=queue_sessions(writer), repo=self.repo,
                                     backend=self.backend, run_id=self.run_id,
                                     hidden_paths=store_files(self.store.path))
        except BaseException:
            writer.close()
            raise
        status, error = "error", None
        self.budget_stop = None
        stacks = StackedTrees(self.repo, hidden=[Path(p) for p in store_files(self.store.path)])
        try:
            self._sweep_crashed()
            self._record_start(features)
            self._reap(manager)
            self._emit("run_started")
            self._schedule(manager, writer, features, agents, results, stacks)
            status = "passed" if all(r.status == "passed" for r in results.values()) else "failed"
            error = self.budget_stop
        except BaseException as exc:
            status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "error"
            error = str(exc) or ("interrupted" if status == "cancelled" else repr(exc))
            self._end_early(features, results, status, error)
            raise
        finally:
            writer.close()
            duration = time.monotonic() - self._started
            self.result = RunResult(self.run_id, status, [results[f.id] for f in features], duration,
                                    backend=self.backend_name, workers=self.workers, stop_reason=self.budget_stop)
            records.finish_run(self.store, self.run_id, status=status, error=error,
                               ended_at=dt.datetime.now(dt.UTC))
            self._reap(manager)
            stacks.close()
            self._emit("run_finished", status=status, message=error)
        return self.result

    def _end_early(self, features: FeatureList, results: dict[str, FeatureResult], status: str,
                   error: str) -> None:
        """The run stops: its features that had not ended end as ``status`` (the store's rows too)."""
        for f in features:
            if results[f.id].status == "pending":
                results[f.id].status, results[f.id].reason = status, error
        try:
            records.close_features(self.store, self.run_id, status=status, ended_at=dt.datetime.now(dt.UTC))
        except Exception as exc:  # the exception that stopped the run is the one to report
            log.warning("could not close the features of run %s: %s", self.run_id, exc)

    def _sweep_crashed(self) -> None:
        try:
            crashed = records.mark_crashed_runs(self.store)
        except Exception as exc:  # housekeeping: a run must not fail because of it
            log.warning("could not mark crashed runs: %s", exc)
            return
        if crashed:
            log.warning("marked %d run(s) crashed, their orchestrator is gone: %s", len(crashed), ", ".join(crashed))

    def _schedule(self, manager: SandboxManager, writer: BatchWriter, features: FeatureList,
                  agents: dict[str, Agent], results: dict[str, FeatureResult], stacks: StackedTrees) -> None:
        running: dict[Future[AgentAttempt], str] = {}
        outstanding: dict[str, int] = {}
        waiting = {f.id: f for f in features.ordered()}
        store_attempt = records.attempt_recorder(writer)

        def record(attempt: AgentAttempt) -> None:
            # a worker thread calls this as its attempt ends; once the run stops, what did not pass
            # was cut short by the stop, whatever error the closed sandbox gave it
            stopping = self._stopping
            if stopping is not None and not attempt.passed:
                attempt.killed_reason = "cancelled"
                attempt.error = f"cancelled: {stopping}" + (f" ({attempt.error})" if attempt.error else "")
            store_attempt(attempt)

        # not a ``with`` block: its exit waits for every worker, and a stopping run must not wait
        # on an attempt whose sandbox ignores the kill
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fibreflow-attempt")
        stopped = False
        trees: dict[str, Path | None] = {}
        try:
            def launch(feature: Feature, iteration: int, tier: str | None, reason: str | None = None,
                       model: str | None = None) -> int:
                """Submit the iteration's attempts; how many the budget let start."""
                learned = self.learnings(feature)
                launched = 0
                for index in range(self.attempts):
                    if self.budget is not None and self.budget_stop is None:
                        self.budget_stop = self.budget.allow(tier, len(running))
                    if self.budget_stop is not None:
                        self._counts["total"] -= self.attempts - index
                        break
                    task = AttemptTask(
                        run_id=self.run_id, feature_id=feature.id,
                        attempt_id=f"{self.run_id}-{feature.id}-{iteration}-{index}",
                        description=feature.task_description(), test_command=feature.test_command,
                        attempt_index=index, iteration=iteration, tier=tier, learnings=list(learned),
                        limits=self.limits, tier_reason=reason, model=model)
                    fut = pool.submit(run_attempt, manager, record, task, agents[feature.id],
                                      profile=self.profile, test_command=feature.test_command,
                                      repo=trees.get(feature.id))
                    running[fut] = feature.id
                    launched += 1
                outstanding[feature.id] = launched
                if launched == 0:
                    self._block(results[feature.id], f"budget: {self.budget_stop}")
                return launched

            def start(feature: Feature) -> None:
                fid = feature.id
                if self.stack and feature.dependencies:
                    chain = [(d.id, getattr(results[d.id].winner, "diff", "") or "")
                             for d in dependency_chain(features, feature)]
                    try:
                        tree = stacks.tree_for(feature, chain)
                    except (StackError, OSError) as exc:
                        self._finish(results[fid], "skipped", str(exc))
                        self._counts["total"] -= self.attempts
                        return
                    trees[fid] = None if tree == self.repo else tree
                if feature.needs_data and self.data_gate is not None:
                    gate = self.data_gate(feature)
                    results[fid].data_gate = gate.to_dict()
                    self._record_feature(fid, data_gate=gate.decision,
                                         data_violations=json.dumps(list(gate.violations)))
                    if not gate.proceed:
                        self._counts["total"] -= self.attempts
                        self._block(results[fid], f"data gate ({gate.policy}): {gate.decision}: "
                                                  + "; ".join(gate.violations))
                        return
                self._record_feature(fid, status="running", started_at=dt.datetime.now(dt.UTC))
                if self.router is not None:
                    decision = choose_tier(feature, self.router, override=self.override)
                    model = self.override.model_id if self.override is not None else None
                    launch(feature, 1, decision.tier, decision.reason, model)
                else:
                    launch(feature, 1, feature.tier, "pinned in the feature list" if feature.tier else None)

            def release() -> None:
                for fid, feature in list(waiting.items()):
                    states = [results[d].status for d in feature.dependencies]
                    blocked = next((d for d in feature.dependencies if results[d].status in _BLOCKING), None)
                    if blocked is not None:
                        del waiting[fid]
                        why = {"failed": "failed", "skipped": "was skipped", "error": "ended on errors",
                               "blocked": "was blocked"}[results[blocked].status]
                        self._finish(results[fid], "skipped", f"dependency {blocked!r} {why}")
                        self._counts["total"] -= self.attempts
                    elif self.budget_stop is not None and all(s == "passed" for s in states):
                        del waiting[fid]
                        self._counts["total"] -= self.attempts
                        self._block(results[fid], f"budget: {self.budget_stop}")
                    elif all(s == "passed" for s in states):
                        del waiting[fid]
                        start(feature)

            try:
                release()
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in done:
                        fid = running.pop(fut)
                        result = fut.result()
                        feature_result = results[fid]
                        feature_result.attempts.append(result)
                        outstanding[fid] -= 1
                        self._count(result)
                        if outstanding[fid] == 0:
                            if self.after_iteration is not None:
                                writer.flush()  # the hook reads this iteration's rows from the store
                                self.after_iteration(features.get(fid), feature_result.attempts[-self.attempts:])
                            self._feature_done(features.get(fid), feature_result, launch)
                    release()
            except BaseException as exc:
                stopped = True
                self._stop(manager, pool, running, results, str(exc) or type(exc).__name__)
                raise
        finally:
            pool.shutdown(wait=not stopped, cancel_futures=True)

    def _stop(self, manager: SandboxManager, pool: ThreadPoolExecutor, running: dict[Future[AgentAttempt], str],
              results: dict[str, FeatureResult], reason: str) -> None:
        """Start nothing more, close every open sandbox and wait (a bounded time) for the workers."""
        self._stopping = reason
        pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + STOP_GRACE_S
        pending = set(running)
        while True:
            manager.cancel(reason)  # again each round: closes what opened meanwhile, or raced a command's start
            done, pending = wait(pending, timeout=0.25)
            for fut in done:
                if fut.cancelled() or fut.exception() is not None:
                    continue
                attempt = fut.result()
                results[running[fut]].attempts.append(attempt)
                self.stopped_attempts.append(attempt)
                self._count(attempt)
            if not pending or time.monotonic() >= deadline:
                break
        if pending:
            log.warning("%d attempt(s) of run %s did not return within %.0fs of the stop",
                        len(pending), self.run_id, STOP_GRACE_S)

    def _feature_done(self, feature: Feature, result: FeatureResult, launch: Callable[..., int]) -> None:
        iteration = max(a.iteration for a in result.attempts)
        latest = [a for a in result.attempts if a.iteration == iteration]
        if any(a.passed for a in latest):
            result.solved_tier = latest[0].tier
            result.winner = pick_winner(latest)
            self._record_feature(feature.id, winner_attempt_id=result.winner.attempt_id if result.winner else None)
            self._finish(result, "passed", None)
            return
        if all(a.infrastructure_error for a in latest):
            # a refused key or a dead API fails every round and every tier alike: retrying only spends
            counts = f"{len(latest)} attempt(s)" if len(latest) > 1 else "the attempt"
            self._finish(result, "error", f"{counts} ended on {latest[-1].error_kind} errors, no test ran: "
                                          f"{latest[-1].error}")
            return
        if self.budget_stop is not None:
            self._finish(result, "failed", f"no attempt of {len(result.attempts)} passed its tests; "
                                           f"budget: {self.budget_stop}")
            return
        next_tier = self.escalate(feature, result)
        reason, model = latest[0].tier_reason, None
        if next_tier is None and iteration < self.iterations:
            next_tier = latest[0].tier  # another iteration on the same tier, with what was just learned
            model = self.override.model_id if self.override is not None else None
            retry = True
        else:
            retry = next_tier is not None
            if retry and self.router is not None and next_tier is not None:
                reason = escalated(self.router, next_tier, latest[0].tier).reason
        if retry:
            self._counts["total"] += self.attempts
            launch(feature, iteration + 1, next_tier, reason, model)
            return
        failed = sum(1 for a in result.attempts if a.status == "failed")
        errors = len(result.attempts) - failed - result.passed_count
        self._finish(result, "failed", f"no attempt of {len(result.attempts)} passed its tests"
                                       + (f" ({failed} failed, {errors} ended on errors)" if errors else ""))

    # -- bookkeeping ---------------------------------------------------------------------------

    def _agents(self, features: FeatureList) -> dict[str, Agent]:
        named: dict[str, Agent] = {}
        chosen = {}
        for feature in features:
            if implementation(feature) is None:  # none named, or a logical agent: its rule picks the tier only
                if feature.agent is not None and (self.router is None or feature.agent not in self.router.agent_rules):
                    raise RunnerError(f"feature {feature.id!r}: unknown agent {feature.agent!r}; known agents: "
                                      f"{', '.join(known_agents())}, or a logical agent with a rule in "
                                      "models.agent_rules (field 'agent')")
                chosen[feature.id] = self.default_agent
                continue
            name = feature.agent or ""
            if name not in named:
                try:
                    named[name] = self.agent_factory(name)
                except AgentError as exc:
                    raise RunnerError(f"feature {feature.id!r}: {exc}") from None
            chosen[feature.id] = named[name]
        return chosen

    def _record_start(self, features: FeatureList) -> None:
        records.start_run(self.store, self.run_id, features, backend=self.backend_name, profile=self.profile,
                          agent=getattr(self.default_agent, "name", type(self.default_agent).__name__),
                          attempts_per_feature=self.attempts, workers=self.workers,
                          started_at=dt.datetime.now(dt.UTC))

    def _record_feature(self, feature_id: str, **values: object) -> None:
        records.update_feature(self.store, self.run_id, feature_id, **values)

    def _finish(self, result: FeatureResult, status: str, reason: str | None) -> None:
        result.status, result.reason = status, reason
        self._record_feature(result.feature.id, status=status, solved_tier=result.solved_tier, reason=reason,
                             ended_at=dt.datetime.now(dt.UTC))
        self._emit("feature_finished", feature_id=result.feature.id, status=status, message=reason)

    def _block(self, result: FeatureResult, reason: str) -> None:
        """The feature's attempts may not start (the data gate, the budget): ``blocked``, with why."""
        self._finish(result, "blocked", reason)

    def _count(self, result: AgentAttempt) -> None:
        self._counts["done"] += 1
        key = {"passed": "passed", "failed": "failed"}.get(result.status, "errors")
        self._counts[key] += 1
        self._emit("attempt_finished", feature_id=result.feature_id, attempt_id=result.attempt_id,
                   status=result.status, message=result.error)

    def _emit(self, kind: EventKind, *, feature_id: str | None = None, attempt_id: str | None = None,
              status: str | None = None, message: str | None = None) -> None:
        if self.progress is None:
            return
        c = self._counts
        self.progress(ProgressEvent(kind=kind, run_id=self.run_id, done=c["done"], total=c["total"],
                                    passed=c["passed"], failed=c["failed"], errors=c["errors"],
                                    elapsed_s=time.monotonic() - self._started, feature_id=feature_id,
                                    attempt_id=attempt_id, status=status, message=message))

    def _reap(self, manager: SandboxManager) -> None:
        try:
            manager.backend.reap_finished_runs(self.store)
        except Exception as exc:  # reaping is hygiene; a run must not fail because of it
            log.warning("could not reap finished runs' sandboxes: %s", exc)


__all__ = ["ParallelRunner", "default_workers", "new_run_id"]
