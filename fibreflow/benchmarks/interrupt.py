"""Ctrl-C on a build: seconds from the first SIGINT to the exit of `fibreflow build` with N attempts running.

A real ``python -m fibreflow.cli build`` process (its own store and state directory in a temporary
directory) runs N attempts of the command agent ``sleep 1000``, each in its own local sandbox; once
every sleep runs, the benchmark sends one SIGINT (``--signal TERM``: SIGTERM) and measures
``sigint_to_exit_s`` (goal <= 5 s with 15 attempts) and ``sandboxes_ended_s`` (until no sleep is
left), then reports the exit code (130 for SIGINT, 143 for SIGTERM), the processes of the sandboxes
left (``left_processes``, goal 0), whether stderr held a traceback, and the run's status in the
store (``cancelled``).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from fibreflow.benchmarks._repo import bench_repo
from fibreflow.errors import BenchmarkError
from fibreflow.sandbox.state import processes_with_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--attempts", type=int, default=15, help="attempts running when the signal comes (default 15)")
    p.add_argument("--signal", choices=("INT", "TERM"), default="INT", help="the signal sent (default INT)")
    p.add_argument("--profile", default="quick", help="sandbox profile (default quick)")
    p.add_argument("--startup-timeout", type=float, default=180.0,
                   help="seconds to wait for every attempt's sleep to start (default 180)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.attempts < 1:
        raise BenchmarkError(f"--attempts must be at least 1, got {args.attempts}")
    signum = signal.SIGINT if args.signal == "INT" else signal.SIGTERM
    marker = f"ffbench{uuid.uuid4().hex[:12]}"
    with tempfile.TemporaryDirectory(prefix="fibreflow-bench-interrupt-") as tmp:
        root = Path(tmp)
        repo = bench_repo(root)
        db = root / "fibreflow.duckdb"
        env = {**os.environ, "FIBREFLOW_DB": str(db), "XDG_STATE_HOME": str(root / "state")}
        env.pop("FIBREFLOW_CONFIG", None)
        run_id = f"bench-interrupt-{uuid.uuid4().hex[:6]}"
        started = time.monotonic()
        with open(root / "stderr.txt", "w") as err, open(root / "stdout.txt", "w") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fibreflow.cli", "build", "sleep on it", "--repo", str(repo),
                 "--attempts", str(args.attempts), "--workers", str(args.attempts), "--profile", args.profile,
                 "--agent", "command", "--agent-command", f"exec -a {marker} sleep 1000", "--run-id", run_id,
                 "--no-progress"], env=env, stdout=out, stderr=err, cwd=root)
        try:
            deadline = started + args.startup_timeout
            while len(processes_with_argument(marker, argv0=True)) < args.attempts:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchmarkError(f"{args.attempts} sandboxed sleeps did not start (exit {proc.poll()}): "
                                         f"{(root / 'stderr.txt').read_text()[-2000:]}")
                time.sleep(0.02)
            all_running_s = time.monotonic() - started
            ended: list[float] = []

            def watch() -> None:  # when the last sleep is gone, at 10 ms resolution
                while processes_with_argument(marker, argv0=True):
                    time.sleep(0.01)
                ended.append(time.monotonic())

            watcher = threading.Thread(target=watch, daemon=True)
            sent = time.monotonic()
            proc.send_signal(signum)
            watcher.start()
            try:
                code = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                code = None
            exited = time.monotonic()
            watcher.join(10)
            left = processes_with_argument(marker)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stderr = (root / "stderr.txt").read_text()
        from fibreflow.store import Store

        store = Store(db, lock_timeout_s=30)
        status = store.scalar("SELECT status FROM runs WHERE run_id = ?", [run_id])
        cancelled = store.scalar("SELECT count(*) FROM attempts WHERE run_id = ? AND killed_reason = 'cancelled'",
                                 [run_id])
    return {"attempts": args.attempts, "signal": f"SIG{args.signal}", "profile": args.profile,
            "all_running_s": round(all_running_s, 3),
            "sigint_to_exit_s": None if code is None else round(exited - sent, 3),
            "sandboxes_ended_s": round(ended[0] - sent, 3) if ended else None,
            "exit_code": code, "left_processes": len(left), "traceback": "Traceback" in stderr,
            "run_status": status, "attempts_stored_cancelled": int(cancelled or 0), "goal_s": 5.0}
