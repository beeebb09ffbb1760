"""Parallel attempts: 15 latency-bound attempts with 15 workers vs 1 attempt, each in its own sandbox.

Each attempt's agent makes 4 model calls to the scripted Messages-API server at 1 s latency each
(through the real ``anthropic`` SDK; with ``--model sleep``, or without the scripted server, it
sleeps 4 x 1 s instead), writes one file in its sandbox, and the runner then runs the feature's
one-assertion test command there. ``ratio`` = wall time of the 15 / wall time of the 1 (goal
<= 1.2: the floor is 1.0 plus the attempts' own CPU time spread over the cores).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import tempfile
import time
from pathlib import Path
from typing import Any

from fibreflow.agents import AttemptOutcome, AttemptTask
from fibreflow.benchmarks._repo import bench_repo
from fibreflow.build.features import FeatureList
from fibreflow.build.runner import ParallelRunner
from fibreflow.errors import BenchmarkError
from fibreflow.sandbox.base import Sandbox
from fibreflow.store import Store

TEST_COMMAND = "python -c \"assert open('result.txt').read() == 'ok\\n'\""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attempts", type=int, default=15, help="attempts in the parallel run (default 15)")
    p.add_argument("--workers", type=int, default=None, help="workers of the parallel run (default: attempts)")
    p.add_argument("--calls", type=int, default=4, help="model calls per attempt (default 4)")
    p.add_argument("--latency", type=float, default=1.0, help="seconds per model call (default 1.0)")
    p.add_argument("--model", choices=("auto", "scripted", "sleep"), default="auto",
                   help="scripted server (auto: when installed) or plain sleeps")
    p.add_argument("--backend", default="local", help="sandbox backend (default local)")
    p.add_argument("--profile", default="quick", help="sandbox profile (default quick)")


class LatencyAgent:
    """An agent whose time goes to waiting on a model, as a real coding agent's does."""

    name = "latency"

    def __init__(self, *, calls: int, latency_s: float, base_url: str | None) -> None:
        self.calls = calls
        self.latency_s = latency_s
        self._client = None
        if base_url is not None:
            import anthropic

            self._client = anthropic.Anthropic(base_url=base_url, api_key="scripted", max_retries=0)

    def run(self, task: AttemptTask, sandbox: Sandbox) -> AttemptOutcome:
        outcome = AttemptOutcome(status="completed")
        for turn in range(self.calls):
            if self._client is None:
                time.sleep(self.latency_s)
                continue
            reply = self._client.messages.create(
                model="claude-sonnet-4-5", max_tokens=64,
                messages=[{"role": "user", "content": f"{task.description} (turn {turn + 1})"}])
            outcome.tokens += reply.usage.input_tokens + reply.usage.output_tokens
        outcome.turns = self.calls
        sandbox.write_files({"result.txt": "ok\n"})
        outcome.ended_at = dt.datetime.now(dt.UTC)
        return outcome


def _timed(store: Store, repo: Path, agent: LatencyAgent, args: argparse.Namespace, attempts: int,
           workers: int) -> float:
    features = FeatureList.from_data([{"id": "write-result", "description": "Write ok to result.txt",
                                       "test_command": TEST_COMMAND}])
    runner = ParallelRunner(store, repo, agent=agent, backend=args.backend, profile=args.profile,
                            attempts=attempts, workers=workers)
    started = time.monotonic()
    result = runner.run(features)
    wall = time.monotonic() - started
    attempts_run = result.features[0].attempts
    if result.features[0].passed_count != attempts:
        errors = sorted({a.error or a.status for a in attempts_run if not a.passed})
        raise BenchmarkError(f"{attempts - result.features[0].passed_count} of {attempts} attempts did not "
                             f"pass: {'; '.join(errors)[:500]}")
    return wall


def run(args: argparse.Namespace) -> dict[str, Any]:
    scripted = args.model == "scripted" or (
        args.model == "auto" and importlib.util.find_spec("fibreflow.models.scripted") is not None)
    workers = args.workers or args.attempts
    with tempfile.TemporaryDirectory(prefix="fibreflow-bench-parallel-") as tmp:
        root = Path(tmp)
        repo = bench_repo(root)
        store = Store(root / "bench.duckdb", lock_timeout_s=60)
        store.migrate()
        server = None
        if scripted:
            from fibreflow.models.scripted import ScriptedServer

            server = ScriptedServer(latency_s=args.latency).start()
        try:
            agent = LatencyAgent(calls=args.calls, latency_s=args.latency,
                                 base_url=server.base_url if server else None)
            warm = LatencyAgent(calls=0, latency_s=0.0, base_url=None)
            _timed(store, repo, warm, args, 1, 1)  # imports, first sandbox, first store writes
            wall_1 = _timed(store, repo, agent, args, 1, 1)
            wall_n = _timed(store, repo, agent, args, args.attempts, workers)
        finally:
            if server is not None:
                server.close()
    return {
        "wall_1_s": round(wall_1, 3),
        "wall_15_s": round(wall_n, 3),
        "ratio": round(wall_n / wall_1, 3),
        "attempts": args.attempts,
        "workers": workers,
        "model": "scripted" if scripted else "sleep",
        "model_calls_per_attempt": args.calls,
        "latency_s": args.latency,
        "backend": args.backend,
        "goal_ratio": 1.2,
    }
