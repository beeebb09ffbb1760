"""The parallel feature runner: N sandboxed attempts per feature, features in dependency order.

Each attempt: create a sandbox -> the agent works in it -> the feature's tests run in it (JUnit
XML and coverage, through ``SandboxManager.extract_results``) -> results are recorded -> the
sandbox is removed. Independent features and the attempts of one feature share one pool of
``workers`` threads (attempts wait on models and test runs, not on Python, so threads suffice).
A feature passes when any attempt passes; a feature whose dependency did not pass is skipped
with that reason. Nothing is written to the user's working tree: a winning attempt is only a
diff in the store until the autopilot turns it into a branch.

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
import logging
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import TYPE_CHECKING

from fibreflow.agents import Agent, AttemptLimits, AttemptTask, get_agent
from fibreflow.build import records
from fibreflow.build.attempt import AgentAttempt, FeatureResult, RunResult, run_attempt
from fibreflow.build.features import Feature, FeatureList
from fibreflow.build.progress import EventKind, ProgressCallback, ProgressEvent
from fibreflow.errors import AgentError, RunnerError
from fibreflow.sandbox.base import store_files
from fibreflow.sandbox.profiles import load_profile
from fibreflow.store import BatchWriter, Store

if TYPE_CHECKING:  # the manager and the settings load their dependencies only when a run needs them
    from fibreflow.config import Settings
    from fibreflow.sandbox.base import SandboxBackend
    from fibreflow.sandbox.manager import SandboxManager

MAX_LOCAL_WORKERS = 64
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
                 iterations: int = 1) -> None:
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
        try:
            self._sweep_crashed()
            self._record_start(features)
            self._reap(manager)
            self._emit("run_started")
            self._schedule(manager, writer, features, agents, results)
            status = "passed" if all(r.status == "passed" for r in results.values()) else "failed"
        except BaseException as exc:
            status = "cancelled" if isinstance(exc, KeyboardInterrupt) else "error"
            error = str(exc) or ("interrupted" if status == "cancelled" else repr(exc))
            self._end_early(features, results, status, error)
            raise
        finally:
            writer.close()
            duration = time.monotonic() - self._started
            self.result = RunResult(self.run_id, status, [results[f.id] for f in features], duration,
                                    backend=self.backend_name, workers=self.workers)
            records.finish_run(self.store, self.run_id, status=status, error=error,
                               ended_at=dt.datetime.now(dt.UTC))
            self._reap(manager)
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
                  agents: dict[str, Agent], results: dict[str, FeatureResult]) -> None:
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
        try:
            def launch(feature: Feature, iteration: int, tier: str | None) -> None:
                learned = self.learnings(feature)
                outstanding[feature.id] = self.attempts
                for index in range(self.attempts):
                    task = AttemptTask(
                        run_id=self.run_id, feature_id=feature.id,
                        attempt_id=f"{self.run_id}-{feature.id}-{iteration}-{index}",
                        description=feature.task_description(), test_command=feature.test_command,
                        attempt_index=index, iteration=iteration, tier=tier, learnings=list(learned),
                        limits=self.limits)
                    fut = pool.submit(run_attempt, manager, record, task, agents[feature.id],
                                      profile=self.profile, test_command=feature.test_command)
                    running[fut] = feature.id

            def release() -> None:
                for fid, feature in list(waiting.items()):
                    states = [results[d].status for d in feature.dependencies]
                    blocked = next((d for d in feature.dependencies if results[d].status in ("failed", "skipped")),
                                   None)
                    if blocked is not None:
                        del waiting[fid]
                        why = "failed" if results[blocked].status == "failed" else "was skipped"
                        self._finish(results[fid], "skipped", f"dependency {blocked!r} {why}")
                        self._counts["total"] -= self.attempts
                    elif all(s == "passed" for s in states):
                        del waiting[fid]
                        self._record_feature(fid, status="running", started_at=dt.datetime.now(dt.UTC))
                        launch(feature, 1, feature.tier)

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

    def _feature_done(self, feature: Feature, result: FeatureResult,
                      launch: Callable[[Feature, int, str | None], None]) -> None:
        latest = result.attempts[-self.attempts:]
        if any(a.passed for a in latest):
            result.solved_tier = latest[0].tier
            self._finish(result, "passed", None)
            return
        next_tier = self.escalate(feature, result)
        if next_tier is None and latest[0].iteration < self.iterations:
            next_tier = latest[0].tier  # another iteration on the same tier, with what was just learned
            retry = True
        else:
            retry = next_tier is not None
        if retry:
            self._counts["total"] += self.attempts
            launch(feature, latest[0].iteration + 1, next_tier)
            return
        self._finish(result, "failed", f"no attempt of {len(result.attempts)} passed its tests")

    # -- bookkeeping ---------------------------------------------------------------------------

    def _agents(self, features: FeatureList) -> dict[str, Agent]:
        named: dict[str, Agent] = {}
        chosen = {}
        for feature in features:
            if feature.agent is None:
                chosen[feature.id] = self.default_agent
                continue
            if feature.agent not in named:
                try:
                    named[feature.agent] = self.agent_factory(feature.agent)
                except AgentError as exc:
                    raise RunnerError(f"feature {feature.id!r}: {exc}") from None
            chosen[feature.id] = named[feature.agent]
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
        self._record_feature(result.feature.id, status=status, solved_tier=result.solved_tier,
                             ended_at=dt.datetime.now(dt.UTC))
        self._emit("feature_finished", feature_id=result.feature.id, status=status, message=reason)

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
