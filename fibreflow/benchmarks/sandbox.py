"""Local sandbox overhead: create -> `true` -> close on a small and a large git repository.

Goal: p50 <= 25 ms for both, the large repository's p50 within 1.5x of the small one's, and
nothing left behind (mounts, directories, processes, cgroups) after the loop. Each sandbox has
its disk limit (the ``quick`` profile's ``disk_mb`` on its own tmpfs) when this host allows it:
``disk_limit`` says which.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from fibreflow.errors import BenchmarkError
from fibreflow.sandbox.base import SandboxBackend, SandboxProfile


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--iterations", type=int, default=100, help="sandboxes per repository (default 100)")
    p.add_argument("--small-files", type=int, default=50, help="files in the small repository (default 50)")
    p.add_argument("--large-files", type=int, default=5000, help="files in the large repository (default 5000)")
    p.add_argument("--warmup", type=int, default=5, help="untimed sandboxes first (default 5)")


def make_repository(path: Path, files: int) -> Path:
    """A committed git repository of ``files`` small Python files in nested directories."""
    path.mkdir(parents=True)
    for i in range(files):
        target = path / f"pkg{i % 50:02d}" / f"sub{(i // 50) % 20:02d}" / f"mod_{i}.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"VALUE_{i} = {i}\n\n\ndef f_{i}(x):\n    return x + {i}\n")
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "bench@localhost",
           "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "bench@localhost"}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "bench"]):
        proc = subprocess.run(["git", *args], cwd=path, env=env, capture_output=True)
        if proc.returncode != 0:
            raise BenchmarkError(f"git {args[0]} failed: {proc.stderr.decode(errors='replace')}")
    return path


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _cycle(backend: SandboxBackend, repo: Path, profile: SandboxProfile, ids: set[str]) -> tuple[float, float, float]:
    """(create, run, close) milliseconds of one sandbox."""
    t0 = time.perf_counter()
    sandbox = backend.create(repo, profile)
    t1 = time.perf_counter()
    result = sandbox.run(["true"])
    t2 = time.perf_counter()
    sandbox.close()
    t3 = time.perf_counter()
    ids.add(sandbox.id)
    if not result.ok:
        raise BenchmarkError(f"`true` failed in a sandbox: exit {result.exit_code}, {result.stderr.strip()}")
    return (t1 - t0) * 1000, (t2 - t1) * 1000, (t3 - t2) * 1000


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fibreflow.sandbox.cgroups import group_paths
    from fibreflow.sandbox.local import LocalBackend
    from fibreflow.sandbox.profiles import load_profile
    from fibreflow.sandbox.state import mounts_under, processes_with_marker

    if args.iterations < 1:
        raise BenchmarkError("--iterations must be at least 1")
    profile = load_profile("quick")
    with tempfile.TemporaryDirectory(prefix="fibreflow-bench-sandbox-") as tmp:
        root = Path(tmp)
        repos = {"small": make_repository(root / "small", args.small_files),
                 "large": make_repository(root / "large", args.large_files)}
        os.sync()  # the repositories' writeback must not land inside the timed loop
        backend = LocalBackend(state_dir=root / "state")
        ids: set[str] = set()
        timings: dict[str, list[tuple[float, float, float]]] = {"small": [], "large": []}
        for repo in repos.values():
            for _ in range(args.warmup):
                _cycle(backend, repo, profile, ids)
        # interleaved, so load from elsewhere on the machine hits both sizes alike
        for _ in range(args.iterations):
            for name, repo in repos.items():
                timings[name].append(_cycle(backend, repo, profile, ids))
        drain_started = time.perf_counter()
        backend.drain()  # closed sandboxes' directories are deleted in the background: wait for it
        drain_s = time.perf_counter() - drain_started
        leaks = {
            "mounts": len(mounts_under(root)),
            "directories": len(list(backend.root.iterdir())),
            "processes": len(processes_with_marker(ids)),
            "cgroups": sum(1 for sid in ids for path in group_paths(sid) if path.exists()),
        }
    result: dict[str, Any] = {}
    for name, phases in timings.items():
        totals = [sum(p) for p in phases]
        result[name] = {"p50_ms": round(statistics.median(totals), 2), "p95_ms": round(_pct(totals, 0.95), 2),
                        "files": args.small_files if name == "small" else args.large_files}
        for i, phase in enumerate(("create", "run", "close")):
            result[name][f"{phase}_p50_ms"] = round(statistics.median(p[i] for p in phases), 2)
    result["large_to_small_p50"] = round(result["large"]["p50_ms"] / result["small"]["p50_ms"], 3)
    result["leaks"] = leaks
    result["iterations"] = args.iterations
    result["cleanup_drain_s"] = round(drain_s, 3)
    result["isolation"] = backend.mode
    result["disk_limit"] = f"tmpfs {profile.disk_mb} MB" if backend.limit_disk else None
    result["goal_met"] = (result["small"]["p50_ms"] <= 25 and result["large"]["p50_ms"] <= 25
                          and result["large_to_small_p50"] <= 1.5 and not any(leaks.values()))
    return result
