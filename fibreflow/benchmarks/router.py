"""Router accuracy, tier split and latency on a labeled CSV, plus routed vs all-Sonnet cost.

The labels file has columns ``text, agent, tier``. The cost comparison replays the labeled
tasks as a call log (every call on Sonnet, token counts drawn per labeled tier with a fixed
seed) through ``fibreflow cost analyze``'s own analysis.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

from fibreflow.config import TIERS
from fibreflow.costs.analysis import analyze_costs
from fibreflow.errors import BenchmarkError
from fibreflow.models.pricing import resolve_path
from fibreflow.models.routing import ModelRouter

DEFAULT_LABELS = Path("data/router_labels.csv")
# (input, output, cache_read) token means per labeled tier: reads are small, design work is large
_PROFILE = {"haiku": (1_800, 250, 0), "sonnet": (9_000, 2_200, 6_000), "opus": (24_000, 5_000, 16_000)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", type=Path, default=DEFAULT_LABELS,
                   help="CSV with columns text, agent, tier (default: the shipped data/router_labels.csv)")
    p.add_argument("--repeat", type=int, default=20, help="timing passes over the labels (default 20)")
    p.add_argument("--seed", type=int, default=7, help="seed of the synthetic token counts (default 7)")
    p.add_argument("--workload-out", type=Path, default=None, help="also write the generated call log here")


def load_labels(path: Path) -> list[dict[str, str]]:
    """Rows of a labels CSV; a bad header or tier is a BenchmarkError naming the file and line."""
    try:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            missing = {"text", "tier"} - set(reader.fieldnames or [])
            if missing:
                raise BenchmarkError(f"{path}:1: missing column(s) {', '.join(sorted(missing))} "
                                     "(expected text, agent, tier)")
            rows = []
            for row in reader:
                tier = (row.get("tier") or "").strip()
                if tier not in TIERS:
                    raise BenchmarkError(f"{path}:{reader.line_num}: tier {tier!r} is not one of {', '.join(TIERS)}")
                rows.append({"text": row["text"] or "", "agent": (row.get("agent") or "").strip(), "tier": tier})
    except OSError as exc:
        raise BenchmarkError(f"{path}: cannot read labels: {exc.strerror}") from None
    if not rows:
        raise BenchmarkError(f"{path}: no labeled rows")
    return rows


def _share(counts: dict[str, int], total: int) -> dict[str, float]:
    return {t: round(counts.get(t, 0) / total, 4) for t in TIERS}


def _workload(rows: list[dict[str, str]], sonnet: str, seed: int, now: dt.datetime) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    calls = []
    for i, row in enumerate(rows):
        inp, out, cached = _PROFILE[row["tier"]]
        calls.append({
            "timestamp": (now - dt.timedelta(days=29 * i / len(rows))).isoformat(),
            "agent": row["agent"] or None, "model": sonnet, "task": row["text"],
            "input_tokens": int(inp * rng.uniform(0.6, 1.4)), "output_tokens": int(out * rng.uniform(0.6, 1.4)),
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": int(cached * rng.uniform(0.6, 1.4)),
        })
    return calls


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = load_labels(resolve_path(args.labels))
    router = ModelRouter()
    confusion = {t: dict.fromkeys(TIERS, 0) for t in TIERS}
    predicted: dict[str, int] = {}
    labeled: dict[str, int] = {}
    wrong = []
    for row in rows:
        decision = router.classify_request(row["text"], row["agent"] or None)
        confusion[row["tier"]][decision.tier] += 1
        predicted[decision.tier] = predicted.get(decision.tier, 0) + 1
        labeled[row["tier"]] = labeled.get(row["tier"], 0) + 1
        if decision.tier != row["tier"]:
            wrong.append({"text": row["text"], "agent": row["agent"], "label": row["tier"],
                          "predicted": decision.tier, "reason": decision.reason})
    timings = []
    for _ in range(max(1, args.repeat)):
        for row in rows:
            t0 = time.perf_counter_ns()
            router.classify_request(row["text"], row["agent"] or None)
            timings.append((time.perf_counter_ns() - t0) / 1e6)
    timings.sort()
    n = len(rows)
    now = dt.datetime.now(dt.UTC)
    calls = _workload(rows, router.get_model_id("sonnet"), args.seed, now)
    with tempfile.TemporaryDirectory() as tmp:
        log = args.workload_out or Path(tmp) / "workload.jsonl"
        log.write_text("".join(json.dumps(c) + "\n" for c in calls), encoding="utf-8")
        costs = analyze_costs(None, [log], days=30, now=now, router=router)
    return {
        "labels": str(args.labels), "rows": n,
        "accuracy": round(sum(confusion[t][t] for t in TIERS) / n, 4),
        "confusion": confusion,
        "distribution": _share(predicted, n),
        "labeled_distribution": _share(labeled, n),
        "p50_ms": round(timings[len(timings) // 2], 4),
        "p99_ms": round(timings[min(len(timings) - 1, int(0.99 * len(timings)))], 4),
        "max_ms": round(timings[-1], 4),
        "classifications_timed": len(timings),
        "workload_calls": costs.calls,
        "routed_cost_usd": round(costs.routed_cost, 4),
        "all_sonnet_cost_usd": round(costs.all_sonnet_cost, 4),
        "savings_vs_sonnet_pct": round(100 * (1 - costs.routed_cost / costs.all_sonnet_cost), 1)
        if costs.all_sonnet_cost else 0.0,
        "cost_by_tier": {k: {"calls": v["calls"], "routed_cost_usd": round(v["routed_cost"], 4),
                             "all_sonnet_cost_usd": round(v["all_sonnet_cost"], 4)}
                         for k, v in sorted(costs.by_tier.items())},
        "misclassified": wrong[:10],
    }
