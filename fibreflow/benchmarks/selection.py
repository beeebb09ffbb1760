"""Best-of-N selection on real LLM samples: the selector against a random pick and the oracle.

For each HumanEval problem, N samples are drawn as N attempts (``--trials`` times) and run in a
project sandbox; the selector picks one using only what an agent has (the docstring examples as
visible tests, the model-generated tests, behaviour on shared inputs); the hidden tests judge it.
JSON keys: ``random`` (pass@1), ``oracle`` (pass@N), ``selected``, ``gap_closure`` =
(selected - random) / (oracle - random), ``n``, ``tasks``.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

from fibreflow.benchmarks._candidates import GENERATED, SAMPLES, add_execution_arguments, choose, execute
from fibreflow.benchmarks._humaneval import load_tasks
from fibreflow.config import SelectionSettings
from fibreflow.errors import ConfigError
from fibreflow.selection import BestOfNSelector


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", type=Path, default=SAMPLES, help=f"candidate samples (default {SAMPLES})")
    p.add_argument("--generated-tests", type=Path, default=GENERATED,
                   help="model-generated tests (default: the CodeT test file beside the samples)")
    p.add_argument("--no-generated-tests", action="store_true", help="select without generated tests")
    p.add_argument("--n", type=int, default=15, help="attempts per problem (default 15)")
    p.add_argument("--trials", type=int, default=10, help="draws of N per problem (default 10)")
    p.add_argument("--seed", default="0", help="seed of the draws (default 0)")
    add_execution_arguments(p)


def run(args: argparse.Namespace) -> dict[str, Any]:
    generated = None if args.no_generated_tests else args.generated_tests
    tasks = load_tasks(args.samples, generated, limit=args.tasks)
    if args.n < 1 or args.trials < 1:
        raise ConfigError("--n and --trials must be at least 1", key="--n")
    draws: dict[str, list[list[int]]] = {}
    for task in tasks:
        if len(task.programs) < args.n:
            raise ConfigError(f"{task.task_id} has {len(task.programs)} samples, fewer than --n {args.n}",
                              path=str(args.samples), key="--n")
        rng = random.Random(f"{args.seed}:{task.task_id}")
        draws[task.task_id] = [rng.sample(range(len(task.programs)), args.n) for _ in range(args.trials)]
    needed = {tid: {i for d in ds for i in d} for tid, ds in draws.items()}
    results, facts = execute(tasks, needed, args)
    selector = BestOfNSelector(SelectionSettings())
    rnd = orc = sel = agreed = 0.0
    for task in tasks:
        res = results[task.task_id]
        for indices in draws[task.task_id]:
            hidden = [res[i].hidden for i in indices]
            rnd += sum(hidden) / len(hidden)
            orc += any(hidden)
            winner, selection = choose(selector, task, res, indices)
            sel += res[winner].hidden
            agreed += selection.consensus.agreed
    count = len(tasks) * args.trials
    rnd, orc, sel = rnd / count, orc / count, sel / count
    return {
        "random": round(rnd, 4), "oracle": round(orc, 4), "selected": round(sel, 4),
        "gap_closure": round((sel - rnd) / (orc - rnd), 4) if orc > rnd else None,
        "n": args.n, "tasks": len(tasks), "trials": args.trials,
        "consensus_rate": round(agreed / count, 4), **facts,
    }
