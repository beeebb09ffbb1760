"""Execute HumanEval candidates in a sandbox, many per sandbox command, with a result cache.

Every candidate of a batch runs under ``_harness.py`` (one forked child per candidate, a timer per
call). Results are cached by the hash of the candidate program and of everything it was run
against, so a second benchmark run, or a different N or trial count, re-executes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fibreflow.benchmarks._humaneval import Task
from fibreflow.errors import BenchmarkError

HARNESS = Path(__file__).with_name("_harness.py")
TIMEOUT = "!Timeout"
LIMITS = {"call_timeout": 0.5, "load_timeout": 2.0, "hidden_timeout": 3.0, "candidate_budget": 4.0,
          "max_timeouts": 3, "memory_mb": 768}
BATCH_CANDIDATES = 400  # candidates per sandbox command: big enough to amortise, small enough to stream


@dataclass
class CandidateResult:
    """What one program did: loaded or not, hidden verdict, outputs per input, pass per test."""

    load_error: str | None
    hidden: bool
    outputs: list[str] = field(default_factory=list)
    tests: list[bool] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"load_error": self.load_error, "hidden": self.hidden, "outputs": self.outputs,
                "tests": self.tests}


def program_key(program: str) -> str:
    """The cache key of one program's text."""
    return hashlib.sha256(program.encode()).hexdigest()[:24]


def _task_key(task: Task, tag: str) -> str:
    payload = json.dumps({"harness": HARNESS.read_text(), "limits": LIMITS, "tag": tag, "inputs": task.inputs,
                          "tests": [t.to_dict() for t in task.examples + task.generated],
                          "hidden": task.hidden_test, "entry_point": task.entry_point}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


def default_cache_dir() -> Path:
    """Where execution results are cached (``$XDG_CACHE_HOME/fibreflow/humaneval-exec``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fibreflow" / "humaneval-exec"


Executor = Callable[[dict[str, Any]], list[str]]
"""Runs one harness job (a dict) somewhere isolated and returns the harness's stdout lines."""


def sandbox_executor(*, backend: str = "local", profile: str = "python-tests",
                     state_dir: Path | None = None) -> tuple[Executor, Callable[[], None]]:
    """An executor that runs each job as one command in one long-lived project sandbox, and the
    function that closes that sandbox."""
    from fibreflow.sandbox.backends import get_backend
    from fibreflow.sandbox.profiles import load_profile

    workdir = Path(tempfile.mkdtemp(prefix="ff-bench-repo-"))
    prof = load_profile(profile)
    options = {"state_dir": state_dir} if state_dir is not None and backend == "local" else {}
    sandbox = get_backend(backend, **options).create(workdir, prof)
    sandbox.write_files({"_harness.py": HARNESS.read_text()})
    counter = iter(range(1 << 30))

    def run(job: dict[str, Any]) -> list[str]:
        n = next(counter)
        sandbox.write_files({f"job{n}.json": json.dumps(job)})
        candidates = sum(len(t["programs"]) for t in job["tasks"])
        result = sandbox.run(["python3", "_harness.py", f"job{n}.json", f"out{n}.jsonl"],
                             timeout=60 + 12.0 * candidates / job["workers"])
        try:
            return sandbox.read_file(f"out{n}.jsonl").splitlines()
        except (FileNotFoundError, OSError):
            raise BenchmarkError(f"harness failed in sandbox {sandbox.id} (exit {result.exit_code}): "
                                 f"{(result.killed_reason or result.stderr)[-500:]}") from None

    def close() -> None:
        sandbox.close()
        for p in sorted(workdir.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        workdir.rmdir()

    return run, close


def execute_tasks(tasks: Sequence[Task], needed: dict[str, set[int]], *, executor: Executor,
                  cache_dir: Path | None, workers: int = 2,
                  cache_tag: str = "") -> dict[str, dict[int, CandidateResult]]:
    """Results of the ``needed`` candidate indices of each task, running only uncached programs
    (``cache_tag`` keeps results of different executors apart)."""
    results: dict[str, dict[int, CandidateResult]] = {}
    pending: list[tuple[Task, dict[str, str]]] = []
    caches: dict[str, tuple[Path | None, dict[str, Any]]] = {}
    for task in tasks:
        key = _task_key(task, cache_tag)
        path = cache_dir / f"{key}.json" if cache_dir else None
        cached = json.loads(path.read_text()) if path and path.exists() else {}
        caches[task.task_id] = (path, cached)
        todo = {program_key(task.programs[i]): task.programs[i] for i in sorted(needed.get(task.task_id, ()))
                if program_key(task.programs[i]) not in cached}
        if todo:
            pending.append((task, todo))
    for batch in _batches(pending):
        job = {**LIMITS, "workers": workers, "tasks": [
            {"key": task.task_id, "programs": todo, "inputs": task.inputs,
             "tests": [t.to_dict() for t in task.examples + task.generated],
             "hidden": {"test": task.hidden_test, "entry_point": task.entry_point}}
            for task, todo in batch]}
        parsed = _parse(executor(job), batch)
        for task, _ in batch:
            path, cached = caches[task.task_id]
            cached.update({k: v.to_dict() for k, v in parsed[task.task_id].items()})
            if path:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(cached))
                tmp.replace(path)
    for task in tasks:
        _, cached = caches[task.task_id]
        results[task.task_id] = {i: CandidateResult(**cached[program_key(task.programs[i])])
                                 for i in needed.get(task.task_id, ())}
    return results


def _batches(pending: list[tuple[Task, dict[str, str]]]) -> list[list[tuple[Task, dict[str, str]]]]:
    batches: list[list[tuple[Task, dict[str, str]]]] = [[]]
    size = 0
    for task, todo in pending:
        items = list(todo.items())
        for start in range(0, len(items), BATCH_CANDIDATES):
            chunk = dict(items[start:start + BATCH_CANDIDATES])
            if size + len(chunk) > BATCH_CANDIDATES and batches[-1]:
                batches.append([])
                size = 0
            batches[-1].append((task, chunk))
            size += len(chunk)
    return [b for b in batches if b]


def _parse(lines: list[str], batch: list[tuple[Task, dict[str, str]]]) -> dict[str, dict[str, CandidateResult]]:
    raw: dict[tuple[str, str], dict[str, Any]] = {}
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a candidate's own stray output; the harness silences stdout, but be safe
        if isinstance(rec, dict) and "t" in rec:
            raw.setdefault((rec["t"], rec["c"]), {}).setdefault(rec["k"], {})[rec["i"]] = rec["v"]
    out: dict[str, dict[str, CandidateResult]] = {}
    for task, todo in batch:
        n_in, n_test = len(task.inputs), len(task.examples) + len(task.generated)
        for cand in todo:
            rec = raw.get((task.task_id, cand), {})
            load = rec.get("load", {}).get(0, TIMEOUT)
            if load is not None:
                res = CandidateResult(load, False, [load] * n_in, [False] * n_test)
            else:
                res = CandidateResult(
                    None, bool(rec.get("hidden", {}).get(0, False)),
                    [rec.get("out", {}).get(i, TIMEOUT) for i in range(n_in)],
                    [bool(rec.get("test", {}).get(i, False)) for i in range(n_test)])
            out.setdefault(task.task_id, {})[cand] = res
    return out
