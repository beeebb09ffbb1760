"""Shared by the selection benchmarks: options, execution of drawn candidates, and turning a
candidate's results into what an agent would know about its attempt (never the hidden verdict)."""

from __future__ import annotations

import argparse
import collections
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fibreflow.benchmarks._execution import (
    CandidateResult,
    default_cache_dir,
    execute_tasks,
    sandbox_executor,
)
from fibreflow.benchmarks._humaneval import Task
from fibreflow.build.attempt import AgentAttempt
from fibreflow.selection import Behaviour, BestOfNSelector, Selection

ROOT = Path(__file__).resolve().parents[2]
# the benchmark data sits beside the project checkout; FIBREFLOW_BENCH_DATA names another place
DATA_DIR = Path(os.environ.get("FIBREFLOW_BENCH_DATA") or ROOT.parent / "shared" / "benchmarks") / "humaneval-codet"
SAMPLES = DATA_DIR / "HumanEval_codegen16B_temp0.8_topp0.95_num100_max300_code_solution.jsonl"
GENERATED = DATA_DIR / "HumanEval_codegen16B_temp0.8_topp0.95_num100_max300_test_case.jsonl"


def add_execution_arguments(p: argparse.ArgumentParser) -> None:
    """Options every candidate-running benchmark shares."""
    p.add_argument("--tasks", type=int, default=None, help="only the first K problems (default all)")
    p.add_argument("--backend", default="local", help="sandbox backend the candidates run in (default local)")
    p.add_argument("--profile", default="python-tests", help="sandbox profile (default python-tests)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2,
                   help="candidates run at once inside the sandbox (default: the CPU count)")
    p.add_argument("--cache", type=Path, default=None,
                   help=f"execution cache directory (default {default_cache_dir()})")
    p.add_argument("--no-cache", action="store_true", help="run every candidate again")
    p.add_argument("--state-dir", type=Path, default=None, help=argparse.SUPPRESS)


def execute(tasks: Sequence[Task], needed: dict[str, set[int]], args: argparse.Namespace) -> tuple[
        dict[str, dict[int, CandidateResult]], dict[str, Any]]:
    """Run the needed candidates in one sandbox (cached); returns results and execution facts."""
    started = time.monotonic()
    executor, close = sandbox_executor(backend=args.backend, profile=args.profile, state_dir=args.state_dir)
    try:
        results = execute_tasks(tasks, needed, executor=executor, workers=args.workers,
                                cache_dir=None if args.no_cache else (args.cache or default_cache_dir()),
                                cache_tag=args.backend)
    finally:
        close()
    return results, {"backend": args.backend, "candidates": sum(len(v) for v in needed.values()),
                     "execution_s": round(time.monotonic() - started, 1)}


def test_weights(task: Task) -> list[float]:
    """Weight of each generated test: the tests on one input share one vote, split by how many
    samples wrote each expectation, so one input asserted many ways does not dominate."""
    per_call: collections.Counter[str | None] = collections.Counter()
    for case in task.generated:
        per_call[case.call] += case.votes
    return [case.votes / per_call[case.call] if case.call else 1.0 for case in task.generated]


def as_attempts(task: Task, results: dict[int, CandidateResult], indices: Sequence[int]) -> tuple[
        list[AgentAttempt], Behaviour]:
    """The attempts an agent would see: docstring examples as the feature's tests; outputs on the
    shared inputs and the generated tests as behaviour."""
    n_ex = len(task.examples)
    attempts, outcomes, pool = [], {}, {}
    for i in indices:
        res = results[i]
        passed = sum(res.tests[:n_ex])
        aid = str(i)
        attempts.append(AgentAttempt(feature_id=task.task_id, attempt_id=aid, tests_passed=passed,
                                     tests_failed=n_ex - passed, exit_code=0 if passed == n_ex else 1))
        outcomes[aid] = res.outputs
        pool[aid] = res.tests[n_ex:]
    return attempts, Behaviour(outcomes=outcomes, pool_tests=pool, test_weights=test_weights(task))


def choose(selector: BestOfNSelector, task: Task, results: dict[int, CandidateResult],
           indices: Sequence[int]) -> tuple[int, Selection]:
    """The candidate index the selector picks among ``indices``."""
    attempts, behaviour = as_attempts(task, results, indices)
    selection = selector.select_best(attempts, behaviour=behaviour)
    assert selection.winner is not None
    return int(selection.winner.attempt_id), selection
