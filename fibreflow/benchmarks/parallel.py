"""Parallel attempts: 15 latency-bound attempts with 15 workers vs 1 attempt, each in its own sandbox.

Each attempt's agent makes 4 model calls to the scripted Messages-API server at 1 s latency each
(through the real ``anthropic`` SDK; with ``--model sleep``, or without the scripted server, it
sleeps 4 x 1 s instead), writes one file in its sandbox, and the runner then runs the feature's
one-assertion test command there. ``ratio`` = wall time of the 15 / wall time of the 1 (goal
<= 1.2: the floor is 1.0 plus the attempts' own CPU time spread over the cores; 1.3 on ``e2b``).

With ``--backend e2b`` the sandboxes come from the hosts ``sandbox.e2b_api_url`` names, or, when
none is configured, from a ``fibreflow sandbox serve`` this benchmark starts on this machine; it
then also reports ``per_call_overhead_ms``: the median time of one trivial sandbox call
(``run("true")``) on e2b minus the same on the local backend, with both medians.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fibreflow.agents import AttemptOutcome, AttemptTask
from fibreflow.benchmarks._repo import bench_repo
from fibreflow.build.features import FeatureList
from fibreflow.build.runner import ParallelRunner
from fibreflow.errors import BenchmarkError
from fibreflow.sandbox.backends import get_backend
from fibreflow.sandbox.base import Sandbox, SandboxBackend
from fibreflow.sandbox.profiles import load_profile
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
           workers: int, backend: str | SandboxBackend) -> float:
    features = FeatureList.from_data([{"id": "write-result", "description": "Write ok to result.txt",
                                       "test_command": TEST_COMMAND}])
    runner = ParallelRunner(store, repo, agent=agent, backend=backend, profile=args.profile,
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


def _call_ms(backend: SandboxBackend, repo: Path, profile: str, calls: int = 20) -> float:
    """Median milliseconds of one trivial command in an open sandbox of ``backend``."""
    with backend.create(repo, load_profile(profile)) as box:
        box.run("true")  # the first call may warm caches on either side
        times = []
        for _ in range(calls):
            started = time.monotonic()
            box.run("true")
            times.append((time.monotonic() - started) * 1000)
    return statistics.median(times)


@contextmanager
def _backend(args: argparse.Namespace) -> Iterator[str | SandboxBackend]:
    """The backend by name, except e2b: configured hosts, or a server started here for the run."""
    if args.backend != "e2b":
        yield args.backend
        return
    from fibreflow.config import load_settings
    from fibreflow.sandbox.e2b import E2BBackend

    settings = load_settings()
    if settings.sandbox.e2b_api_url:
        yield E2BBackend(settings=settings)
        return
    from fibreflow.sandbox.e2b_launch import ServerProcess

    with ServerProcess("--profile", args.profile) as server:
        yield E2BBackend(settings=settings, api_key=server.api_key, api_url=server.url, creates_per_second=0)


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
        overhead: dict[str, float] = {}
        try:
            with _backend(args) as backend:
                agent = LatencyAgent(calls=args.calls, latency_s=args.latency,
                                     base_url=server.base_url if server else None)
                warm = LatencyAgent(calls=0, latency_s=0.0, base_url=None)
                _timed(store, repo, warm, args, 1, 1, backend)  # imports, first sandbox, first store writes
                wall_1 = _timed(store, repo, agent, args, 1, 1, backend)
                wall_n = _timed(store, repo, agent, args, args.attempts, workers, backend)
                if not isinstance(backend, str):
                    local_ms = _call_ms(get_backend("local", state_dir=root / "state"), repo, args.profile)
                    remote_ms = _call_ms(backend, repo, args.profile)
                    overhead = {"call_ms_local": round(local_ms, 2), "call_ms_e2b": round(remote_ms, 2),
                                "per_call_overhead_ms": round(remote_ms - local_ms, 2)}
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
        "goal_ratio": 1.3 if args.backend == "e2b" else 1.2,
        **overhead,
    }
