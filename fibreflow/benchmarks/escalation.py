"""Tier escalation on recorded samples: cheapest tier first, pay for the next only when unsure.

Per problem, k samples of the cheapest tier are its attempts; the selector picks among all
attempts so far and the run stops when it is confident: the pick passes every docstring example
AND at least ``--agree`` attempts behave exactly like it on the shared inputs (one candidate
passing the weak docstring examples is not enough). Otherwise the next tier's k samples are
bought. Baseline: best-of-k at the strongest tier alone. Costs are in units of ``--prices`` per
sample. JSON keys: ``solved``, ``cost``, ``baseline_solved``, ``baseline_cost``, ``cost_ratio``,
``quality_ratio``.

With one real samples file, ``--emulate`` builds tiers from it: a tier with odds multiplier m
draws a sample that passes the hidden tests m times as readily as one that fails (a stronger
model is more often right); the stop rule never sees those labels. The multipliers are given
directly (``haiku=1,sonnet=3,opus=10``) or derived from the tier models' published pass rates on
one benchmark (``haiku=73.3%,sonnet=77.2%,opus=74.5%``: a constant shift in log-odds).
``--calibrate`` replaces the fixed rule by cross-fitted tuned rules (see ``_stoprule``).
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fibreflow.benchmarks._candidates import GENERATED, SAMPLES, add_execution_arguments, as_attempts, execute
from fibreflow.benchmarks._execution import CandidateResult
from fibreflow.benchmarks._humaneval import Task, load_tasks
from fibreflow.benchmarks._stoprule import Rule, TierState, Trace, calibrate, evaluate, split
from fibreflow.config import SelectionSettings
from fibreflow.errors import BenchmarkError, ConfigError
from fibreflow.selection import AgentAttempt, Behaviour, BestOfNSelector, Selection


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tier", action="append", default=[], metavar="NAME=SAMPLES.jsonl",
                   help="a tier's samples, cheapest first (repeat per tier)")
    p.add_argument("--emulate", default=None, metavar="NAME=ODDS,...",
                   help="emulate tiers from --samples by odds multipliers (haiku=1,sonnet=3,opus=10) or by "
                        "published pass rates (haiku=73.3%%,sonnet=77.2%%,opus=74.5%%)")
    p.add_argument("--samples", type=Path, default=SAMPLES, help="the samples file --emulate draws from")
    p.add_argument("--generated-tests", type=Path, default=GENERATED, help="model-generated tests")
    p.add_argument("--prices", default="1,3,15", help="price per sample of each tier (default 1,3,15)")
    p.add_argument("--k", type=int, default=3, help="samples bought per tier (default 3)")
    p.add_argument("--agree", default="2",
                   help="attempts that must behave like the pick before a tier is trusted: one number, or "
                        "one per tier below the top (default 2)")
    p.add_argument("--give-up", default="none",
                   help="per tier below the top: give up (buy no more) when no attempt passes every example "
                        "and the best passes at most this share of them; 'none' never (default none)")
    p.add_argument("--calibrate", action="store_true",
                   help="tune --agree/--give-up on one half of the tasks (even or odd numbers) and score the "
                        "other half with it, both ways round (cross-fitting); replaces --agree/--give-up")
    p.add_argument("--target", type=float, default=0.98, help="quality ratio --calibrate must keep (default 0.98)")
    p.add_argument("--trials", type=int, default=5, help="draws per problem (default 5)")
    p.add_argument("--seed", default="0", help="seed of the draws (default 0)")
    add_execution_arguments(p)


def _tiers(args: argparse.Namespace) -> tuple[list[str], list[dict[str, Task]], list[float] | None]:
    """Tier names, their tasks by id, and (emulation only) odds multipliers."""
    if bool(args.tier) == bool(args.emulate):
        raise ConfigError("give either --tier NAME=SAMPLES.jsonl (repeated) or --emulate NAME=ODDS,...")
    if args.emulate:
        names, odds = emulated_odds(args.emulate)
        tasks = {t.task_id: t for t in load_tasks(args.samples, args.generated_tests, limit=args.tasks)}
        return names, [tasks] * len(names), odds
    names, pools = [], []
    for spec in args.tier:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--tier {spec!r}: expected NAME=SAMPLES.jsonl", key="--tier")
        names.append(name)
        pools.append({t.task_id: t for t in load_tasks(Path(path), args.generated_tests, limit=args.tasks)})
    return names, pools, None


def emulated_odds(spec: str) -> tuple[list[str], list[float]]:
    """Tier names and odds multipliers from ``NAME=ODDS,...`` or ``NAME=RATE%,...``.

    A rate is a tier model's published pass rate on one benchmark; tiers then differ by a constant
    shift in log-odds (as in item response theory): a tier's multiplier is its odds of passing
    divided by the first tier's, so it is as much likelier to be right on every problem."""
    try:
        pairs = [(name.strip(), value.strip()) for name, value in (part.split("=") for part in spec.split(","))]
    except ValueError:
        raise ConfigError(f"--emulate {spec!r}: expected NAME=ODDS,... (haiku=1,opus=10) or NAME=RATE%,... "
                          "(haiku=73.3%,opus=74.5%)", key="--emulate") from None
    rates = [value.endswith("%") for _, value in pairs]
    if any(rates) and not all(rates):
        raise ConfigError(f"--emulate {spec!r}: give every tier an odds multiplier or every tier a pass rate",
                          key="--emulate")
    values: list[float] = []
    for (name, value), rate in zip(pairs, rates, strict=True):
        try:
            number = float(value.rstrip("%"))
        except ValueError:
            number = float("nan")
        if not name or not (0 < number < 100 if rate else number > 0):
            raise ConfigError(f"--emulate: {name or '?'}={value} is not a positive odds multiplier or a pass "
                              "rate strictly between 0% and 100%", key="--emulate")
        values.append(number / (100 - number) if rate else number)
    return [n for n, _ in pairs], [v / values[0] for v in values] if all(rates) else values


def _draw(rng: random.Random, candidates: Sequence[int], k: int, weights: Sequence[float] | None) -> list[int]:
    pool, w = list(candidates), (list(weights) if weights else None)
    out: list[int] = []
    while pool and len(out) < k:
        i = rng.choices(range(len(pool)), weights=w)[0] if w else rng.randrange(len(pool))
        out.append(pool.pop(i))
        if w:
            w.pop(i)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    names, pools, odds = _tiers(args)
    try:
        prices = [float(x) for x in args.prices.split(",")]
    except ValueError:
        raise ConfigError(f"--prices {args.prices!r}: expected numbers like 1,3,15", key="--prices") from None
    if len(prices) != len(names):
        raise ConfigError(f"--prices has {len(prices)} values for {len(names)} tiers", key="--prices")
    common = sorted(set.intersection(*(set(p) for p in pools)), key=lambda t: int(t.split("/")[-1]))
    if not common:
        raise ConfigError("the tiers' samples files share no problem", key="--tier")
    # emulated tiers weight by the hidden verdict: run every sample of every problem once first
    labels: dict[str, dict[int, CandidateResult]] = {}
    if odds:
        labels, _ = execute([pools[0][t] for t in common],
                            {t: set(range(len(pools[0][t].programs))) for t in common}, args)

    def weights(t: int, tid: str, cands: list[int]) -> list[float] | None:
        return [odds[t] if labels[tid][i].hidden else 1.0 for i in cands] if odds else None

    plans: list[tuple[str, int, list[list[int]], list[int]]] = []
    needed: list[dict[str, set[int]]] = [{} for _ in names]
    for tid in common:
        for trial in range(args.trials):
            rng = random.Random(f"{args.seed}:{tid}:{trial}")
            used: set[int] = set()
            ladder = []
            for t, pool in enumerate(pools):
                n = len(pool[tid].programs)
                cands = [i for i in range(n) if not (odds and i in used)]
                drawn = _draw(rng, cands, args.k, weights(t, tid, cands))
                used.update(drawn)
                ladder.append(drawn)
                needed[t].setdefault(tid, set()).update(drawn)
            top = len(pools) - 1
            cands = list(range(len(pools[top][tid].programs)))
            baseline = _draw(rng, cands, args.k, weights(top, tid, cands))
            needed[top][tid].update(baseline)
            plans.append((tid, trial, ladder, baseline))
    results = []
    facts: dict[str, Any] = {}
    for t, pool in enumerate(pools):
        res, facts = execute([pool[tid] for tid in common], needed[t], args)
        results.append(res)
    traces = _traces(plans, pools, results)
    common_keys = {"tiers": names, "prices": prices, "k": args.k, "tasks": len(common), "trials": args.trials,
                   "emulated": bool(args.emulate), **({"odds": odds} if odds else {}), **facts}
    if args.calibrate:
        cal = calibrate(traces, prices, args.k, target=args.target)
        figures = cal.pop("crossfit")
        folds = [{**f, "rule": f["rule"].to_dict()} for f in cal.pop("folds")]
        rule_json: Any = "cross-fitted: each half of the tasks decided by the rule tuned on the other half"
        extra: dict[str, Any] = {"calibration": {**cal, "folds": folds}}
    else:
        rule = _rule(args, len(names))
        figures = evaluate(traces, rule, prices, args.k)
        even, odd = split(traces)
        rule_json = rule.to_dict()
        extra = {"split": {"even": evaluate(even, rule, prices, args.k), "odd": evaluate(odd, rule, prices, args.k)}}
    return {**figures, "stopped_at": dict(zip(names, figures["stopped_at"], strict=True)), "rule": rule_json,
            **extra, **common_keys}


def _rule(args: argparse.Namespace, tiers: int) -> Rule:
    """The stop / give-up rule from ``--agree`` and ``--give-up`` (one value, or one per lower tier)."""
    def per_tier(option: str, text: str, parse: Any) -> tuple[Any, ...]:
        try:
            values = [parse(x.strip()) for x in text.split(",")]
        except ValueError:
            raise ConfigError(f"{option} {text!r}: expected a number or a comma list", key=option) from None
        if len(values) == 1:
            values *= tiers - 1
        if len(values) != tiers - 1:
            raise ConfigError(f"{option} has {len(values)} values for {tiers - 1} tiers below the top", key=option)
        return tuple(values)
    return Rule(per_tier("--agree", args.agree, int),
                per_tier("--give-up", args.give_up, lambda x: None if x == "none" else float(x)))


def _traces(plans: list, pools: list[dict[str, Task]],
            results: list[dict[str, dict[int, CandidateResult]]]) -> list[Trace]:
    """What the selector and an agent know after each tier of each draw (see ``TierState``)."""
    selector = BestOfNSelector(SelectionSettings())
    top = len(pools) - 1
    traces = []
    for tid, _, ladder, baseline in plans:
        attempts, outcomes, tests, verdict = [], {}, {}, {}
        states = []
        for t, drawn in enumerate(ladder):
            tier_attempts, behaviour = as_attempts(pools[t][tid], results[t][tid], drawn)
            for a in tier_attempts:
                key = f"{t}:{a.attempt_id}"
                verdict[key] = results[t][tid][int(a.attempt_id)].hidden
                outcomes[key] = behaviour.outcomes[a.attempt_id]
                tests[key] = behaviour.pool_tests[a.attempt_id]
                a.attempt_id = key
            attempts += tier_attempts
            merged = Behaviour(outcomes=outcomes, pool_tests=tests, test_weights=behaviour.test_weights)
            winner = _winner(selector.select_best(attempts, behaviour=merged), tid)
            mine = merged.signature(winner.attempt_id)
            states.append(TierState(
                passed=winner.passed, peers=sum(merged.signature(a.attempt_id) == mine for a in attempts),
                passing=sum(a.passed for a in attempts),
                best_fraction=max(a.tests_passed / (a.tests_passed + a.tests_failed)
                                  if a.tests_passed + a.tests_failed else 1.0 for a in attempts),
                hidden=bool(verdict[winner.attempt_id])))
        base_attempts, behaviour = as_attempts(pools[top][tid], results[top][tid], baseline)
        pick = _winner(selector.select_best(base_attempts, behaviour=behaviour), tid)
        traces.append(Trace(tid, tuple(states), bool(results[top][tid][int(pick.attempt_id)].hidden)))
    return traces


def _winner(selection: Selection, tid: str) -> AgentAttempt:
    """The selection's winner; there is none only when no attempt was drawn."""
    if selection.winner is None:
        raise BenchmarkError(f"{tid}: no candidate drawn to select from (a tier has no samples for it)")
    return selection.winner


