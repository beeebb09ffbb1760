"""The learning effect: the same attempts twice, the second time with the first run's knowledge base.

``--scenario demo`` (the default) runs the project's real loop, the autopilot with the ``claude``
agent against the SCRIPTED model on the demo repository (see ``_learning_demo``). ``--scenario
humaneval`` replays recorded CodeGen samples as below.

Attempts are real CodeGen samples of HumanEval problems, submitted in order until one passes the
problem's docstring examples (the feature's tests), at most ``--iterations`` per problem. Every
attempt's examples run in a sandbox; failures go to a fresh knowledge base from that real output.
The second run gets the first run's knowledge base: before each attempt it is shown the relevant
learnings and, like an agent reading its "known pitfalls", re-drafts (takes the next sample) while
its draft would repeat one it can check without running it (an undefined name, a missing module,
code that does not parse). No model is in the loop: this measures the plumbing's effect, not a
model's ability to learn. JSON keys ``success_rate`` and ``repeat_failure_rate`` (lists by
iteration, second run; a repeated failure is one with a signature this run already failed with on
the same problem) and ``baseline`` (the same for the first run).
"""

from __future__ import annotations

import argparse
import ast
import builtins
import json
import tempfile
from pathlib import Path
from typing import Any

from fibreflow.benchmarks._candidates import GENERATED, SAMPLES
from fibreflow.benchmarks._humaneval import Task, load_tasks
from fibreflow.build.attempt import AgentAttempt
from fibreflow.errors import ConfigError
from fibreflow.learning import FailureKnowledgeBase, Learning, LearningContext
from fibreflow.store import Store

RUNNER = '''import json, sys, traceback
ns = {"__name__": "solution"}
try:
    exec(compile(open("solution.py").read(), "solution.py", "exec"), ns)
except BaseException:
    traceback.print_exc()
    print("ERROR solution.py - could not be imported")
    sys.exit(2)
failed = 0
for name, src in json.load(open("examples.json")):
    try:
        exec(compile(src, "test_examples.py", "exec"), dict(ns))
    except BaseException as exc:
        failed += 1
        traceback.print_exc()
        print(f"FAILED test_examples.py::{name} - {type(exc).__name__}: {exc}"[:300])
print(f"{failed} failed")
sys.exit(1 if failed else 0)
'''


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", choices=("demo", "humaneval"), default="demo",
                   help="demo: the autopilot on the demo repository with the scripted model, twice (default); "
                        "humaneval: replay recorded CodeGen samples")
    p.add_argument("--attempts", type=int, default=6, help="demo: attempts per feature (default 6)")
    p.add_argument("--workers", type=int, default=None, help="demo: attempts run at once (default: the runner's)")
    p.add_argument("--samples", type=Path, default=SAMPLES, help="the attempts' samples")
    p.add_argument("--tasks", type=int, default=None, help="only the first K problems (default all)")
    p.add_argument("--iterations", type=int, default=5, help="attempts per problem at most (default 5)")
    p.add_argument("--drafts", type=int, default=10, help="samples an agent may draw per problem (default 10)")
    p.add_argument("--backend", default="local", help="sandbox backend (default local)")
    p.add_argument("--state-dir", type=Path, default=None, help=argparse.SUPPRESS)


def _evidence(tasks: list[Task], drafts: int, args: argparse.Namespace) -> dict[tuple[str, int], dict[str, Any]]:
    """Run each task's first ``drafts`` samples against its docstring examples in one sandbox."""
    from fibreflow.sandbox.backends import get_backend
    from fibreflow.sandbox.profiles import load_profile

    files: dict[str, str] = {"runner.py": RUNNER}
    keys: list[tuple[str, int]] = []
    for t in tasks:
        examples = [[f"test_{t.entry_point}_{k}", e.src] for k, e in enumerate(t.examples, 1)]
        for i, program in enumerate(t.programs[:drafts]):
            d = f"a{len(keys)}"
            files[f"{d}/solution.py"] = program
            files[f"{d}/examples.json"] = json.dumps(examples)
            keys.append((t.task_id, i))
    script = ('for d in a*/; do (cd "$d" && timeout 10 python3 ../runner.py > out.txt 2>&1; '
              'echo $? > rc.txt); done')
    options = {"state_dir": args.state_dir} if args.state_dir and args.backend == "local" else {}
    with tempfile.TemporaryDirectory(prefix="ff-bench-learn-") as repo:
        with get_backend(args.backend, **options).create(Path(repo), load_profile("python-tests")) as sandbox:
            sandbox.write_files(files)
            sandbox.run(script, timeout=60 + 2.0 * len(keys))
            return {key: {"test_output": sandbox.read_file(f"a{n}/out.txt"),
                          "exit_code": int(sandbox.read_file(f"a{n}/rc.txt").strip() or 1)}
                    for n, key in enumerate(keys)}


def _trips(program: str, learning: Learning) -> bool:
    """Would this draft repeat the pitfall? Only what can be checked without running it."""
    subject = learning.subject
    try:
        tree = ast.parse(program)
    except SyntaxError:
        return learning.error_type in ("SyntaxError", "IndentationError")
    if learning.error_type in ("ModuleNotFoundError", "ImportError") and subject:
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        imported |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        return subject.split(".")[0] in {m.split(".")[0] for m in imported}
    if learning.error_type == "NameError" and subject:
        bound = set(dir(builtins))
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.ClassDef)):
                bound.add(n.name)
                bound |= {a.arg for a in n.args.args} if isinstance(n, ast.FunctionDef) else set()
            elif isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store):
                bound.add(n.id)
            elif isinstance(n, (ast.Import, ast.ImportFrom)):
                bound |= {(a.asname or a.name).split(".")[0] for a in n.names}
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
        return subject in used and subject not in bound
    return False


def _run_once(tasks: list[Task], evidence: dict, kb: FailureKnowledgeBase, *, iterations: int, drafts: int,
              use_learnings: bool, run_id: str) -> dict[str, list[float] | list[int]]:
    passed = [0] * iterations
    tried = [0] * iterations
    failed = [0] * iterations
    repeated = [0] * iterations
    for task in tasks:
        mine: set[str] = set()  # signatures this run already failed with on this problem
        next_draft = 0
        for it in range(iterations):
            shown = kb.get_relevant_learnings(LearningContext(agent="codegen-16b", feature_text=task.prompt))[:10] \
                if use_learnings else []
            draft = next_draft
            while use_learnings and draft < min(drafts, len(task.programs)) - 1 and any(
                    _trips(task.programs[draft], s) for s in shown):
                draft += 1  # re-draft: this one would repeat a known pitfall
            if draft >= min(drafts, len(task.programs)):
                break
            next_draft = draft + 1
            ev = evidence[(task.task_id, draft)]
            attempt = AgentAttempt(feature_id=task.task_id, agent="codegen-16b", attempt_id=f"{run_id}-{task.task_id}-{it}",
                                   run_id=run_id, iteration=it + 1, exit_code=ev["exit_code"],
                                   test_output=ev["test_output"], feature_text=task.prompt)
            tried[it] += 1
            if shown:
                kb.record_outcome([s.pattern_id for s in shown], attempt)
            if attempt.passed:
                passed[it] += 1
                break
            failed[it] += 1
            if kb.store_failure(attempt) and attempt.failure_analysis:
                signature = attempt.failure_analysis.error_pattern
                repeated[it] += signature in mine
                mine.add(signature)
    return {"success_rate": [round(p / t, 4) if t else 0.0 for p, t in zip(passed, tried, strict=True)],
            "repeat_failure_rate": [round(r / f, 4) if f else 0.0 for r, f in zip(repeated, failed, strict=True)],
            "attempts": tried}


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.scenario == "demo":
        from fibreflow.benchmarks._learning_demo import run_demo

        if args.attempts < 1:
            raise ConfigError(f"--attempts must be at least 1, got {args.attempts}", key="--attempts")
        return run_demo(attempts=args.attempts, workers=args.workers)
    tasks = [t for t in load_tasks(args.samples, GENERATED, limit=args.tasks) if t.examples]
    evidence = _evidence(tasks, args.drafts, args)
    with tempfile.TemporaryDirectory(prefix="ff-bench-learn-db-") as tmp:
        kb = FailureKnowledgeBase(Store(Path(tmp) / "learning.duckdb", lock_timeout_s=60))
        first = _run_once(tasks, evidence, kb, iterations=args.iterations, drafts=args.drafts,
                          use_learnings=False, run_id="first")
        second = _run_once(tasks, evidence, kb, iterations=args.iterations, drafts=args.drafts,
                           use_learnings=True, run_id="second")
        patterns = len(kb.list_patterns())
    return {**{k: second[k] for k in ("success_rate", "repeat_failure_rate", "attempts")},
            "baseline": first, "tasks": len(tasks), "iterations": args.iterations, "patterns": patterns,
            "scenario": "humaneval", "model": "replayed CodeGen-16B samples"}
