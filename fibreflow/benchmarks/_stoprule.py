"""The escalation benchmark's stop / give-up rule, its evaluation, and its honest calibration.

What an agent knows after buying a tier (``TierState``) is computed once per draw from the
docstring examples and the candidates' behaviour on the shared inputs; the hidden verdict of the
pick rides along only to score the rule afterwards. A ``Rule`` then decides per tier:

- stop: the pick passes every docstring example and at least ``agree[t]`` attempts so far behave
  exactly like it (the examples alone are weak tests);
- give up (keep the pick, buy nothing more): no attempt so far passes every example and the best
  attempt passes at most ``give_up[t]`` of them, i.e. the cheaper tiers found no foothold;
- else buy the next tier. The top tier always stops.

``calibrate`` picks the cheapest rule of a grid that keeps the quality target on one half of the
tasks (even or odd HumanEval numbers) and scores it on the other half, both ways round, so every
task's figure comes from a rule tuned without it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

AGREE_GRID = (1, 2, 3, 4)
GIVE_UP_GRID = (None, 0.0, 0.34, 0.5, 1.0)  # None: never give up at that tier


@dataclass(frozen=True)
class TierState:
    """What an agent knows after a tier's attempts are in (plus the pick's hidden verdict)."""

    passed: bool  # the pick passes every docstring example
    peers: int  # attempts so far that behave exactly like the pick (the pick included)
    passing: int  # attempts so far that pass every example
    best_fraction: float  # the largest share of examples one attempt passes
    hidden: bool  # the pick's hidden verdict: for scoring only, never read by a rule


@dataclass(frozen=True)
class Trace:
    """One draw of one task: the states tier by tier and the baseline pick's verdict."""

    task_id: str
    states: tuple[TierState, ...]
    baseline: bool


@dataclass(frozen=True)
class Rule:
    """Per non-top tier: attempts that must agree before stopping, and the give-up threshold."""

    agree: tuple[int, ...]
    give_up: tuple[float | None, ...]

    def decide(self, tier: int, state: TierState) -> str:
        """``stop``, ``give_up`` or ``escalate`` after ``tier``'s attempts."""
        if tier >= len(self.agree) or (state.passed and state.peers >= self.agree[tier]):
            return "stop"
        limit = self.give_up[tier]
        if limit is not None and state.passing == 0 and state.best_fraction <= limit:
            return "give_up"
        return "escalate"

    def to_dict(self) -> dict[str, Any]:
        return {"agree": list(self.agree), "give_up_at_best_fraction": list(self.give_up)}


def evaluate(traces: Sequence[Trace], rule: Rule, prices: Sequence[float], k: int) -> dict[str, Any]:
    """The rule's figures over ``traces``: per-draw means, ratios to the baseline, where it stopped."""
    return evaluate_parts([(traces, rule)], prices, k)


def evaluate_parts(parts: Sequence[tuple[Sequence[Trace], Rule]], prices: Sequence[float],
                   k: int) -> dict[str, Any]:
    """Figures over several groups of draws, each decided by its own rule (cross-fitting)."""
    solved = cost = base = gave_up = 0.0
    stopped = [0] * len(prices)
    n = 0
    for traces, rule in parts:
        for trace in traces:
            for tier, state in enumerate(trace.states):
                cost += prices[tier] * k
                verdict = rule.decide(tier, state)
                if verdict != "escalate":
                    solved += state.hidden
                    stopped[tier] += 1
                    gave_up += verdict == "give_up"
                    break
            base += trace.baseline
        n += len(traces)
    draws, n = n, max(n, 1)
    base_cost = prices[-1] * k
    solved, cost, base = solved / n, cost / n, base / n
    return {"solved": round(solved, 4), "cost": round(cost, 3), "baseline_solved": round(base, 4),
            "baseline_cost": round(base_cost, 3), "cost_ratio": round(cost / base_cost, 4) if base_cost else None,
            "quality_ratio": round(solved / base, 4) if base else None, "gave_up": round(gave_up / n, 4),
            "stopped_at": [round(s / n, 4) for s in stopped], "draws": draws}


def grid(tiers: int) -> list[Rule]:
    """Every rule of the calibration grid for ``tiers`` tiers."""
    inner = tiers - 1
    return [Rule(tuple(a), tuple(g)) for a in itertools.product(AGREE_GRID, repeat=inner)
            for g in itertools.product(GIVE_UP_GRID, repeat=inner)]


def split(traces: Sequence[Trace]) -> tuple[list[Trace], list[Trace]]:
    """The draws of even-numbered tasks and those of odd-numbered tasks."""
    halves: tuple[list[Trace], list[Trace]] = ([], [])
    for trace in traces:
        halves[int(trace.task_id.split("/")[-1]) % 2].append(trace)
    return halves


Scored = list[tuple[Rule, dict[str, Any]]]


def score(traces: Sequence[Trace], prices: Sequence[float], k: int) -> Scored:
    """Every grid rule with its figures on ``traces``."""
    return [(rule, evaluate(traces, rule, prices, k)) for rule in grid(len(prices))]


def fit(scored: Scored, *, target: float) -> tuple[Rule, dict[str, Any], bool]:
    """The cheapest scored rule whose quality ratio reaches ``target`` (or, if none does, the one
    that solves most), its figures, and whether the target was reached."""
    ok = [(r, f) for r, f in scored if (f["quality_ratio"] or 0) >= target]
    rule, figures = (min(ok, key=lambda rf: (rf[1]["cost"], -rf[1]["solved"])) if ok
                     else max(scored, key=lambda rf: (rf[1]["solved"], -rf[1]["cost"])))
    return rule, figures, bool(ok)


def calibrate(traces: Sequence[Trace], prices: Sequence[float], k: int, *,
              target: float) -> dict[str, Any]:
    """Two-fold cross-fitting: a rule tuned on the even tasks decides the odd ones and vice versa, so
    every task is scored by a rule that never saw it (``crossfit``). Also the even half's
    cost/quality Pareto front, each point with its figures on the odd half."""
    even, odd = split(traces)
    scored_even = score(even, prices, k)
    folds: list[dict[str, Any]] = []
    for name, scored, held in (("even", scored_even, odd), ("odd", score(odd, prices, k), even)):
        rule, figures, met = fit(scored, target=target)
        folds.append({"tuned_on": name, "rule": rule, "met_on_tune": met, "tune": figures,
                      "heldout": evaluate(held, rule, prices, k)})
    crossfit = evaluate_parts([(odd, folds[0]["rule"]), (even, folds[1]["rule"])], prices, k)
    front, best_q = [], -1.0
    for r, f in sorted(scored_even, key=lambda rf: (rf[1]["cost"], -rf[1]["solved"])):
        if f["solved"] > best_q:
            best_q = f["solved"]
            h = evaluate(odd, r, prices, k)
            front.append({**r.to_dict(), "tune": [f["cost_ratio"], f["quality_ratio"]],
                          "heldout": [h["cost_ratio"], h["quality_ratio"]]})
    return {"target": target, "crossfit": crossfit, "folds": folds, "curve": front}
