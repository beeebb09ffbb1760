"""Figures for ``fibreflow learn stats``: is the knowledge base making attempts better?"""

from __future__ import annotations

from typing import Any

from fibreflow.store import Store


def learning_stats(store: Store) -> dict[str, Any]:
    """Patterns per ISO week, the repeated-failure rate (the share of stored failures whose
    signature had been seen before) and the attempts' success rate per iteration."""
    totals = store.query_df(
        "SELECT count(*) AS patterns, coalesce(sum(count), 0) AS failures, "
        "count(*) FILTER (WHERE retired) AS retired FROM learned_patterns").iloc[0]
    failures = int(totals["failures"])
    weeks = store.query_df(
        "SELECT strftime(first_seen, '%G-W%V') AS week, count(*) AS new_patterns FROM learned_patterns "
        "GROUP BY 1 ORDER BY 1")
    seen = store.query_df(
        "SELECT strftime(event_at, '%G-W%V') AS week, count(*) AS failures FROM pattern_events "
        "WHERE event = 'seen' GROUP BY 1 ORDER BY 1")
    per_week = {w: {"week": w, "new_patterns": int(n), "failures": 0} for w, n in weeks.itertuples(index=False)}
    for w, n in seen.itertuples(index=False):
        per_week.setdefault(w, {"week": w, "new_patterns": 0, "failures": 0})["failures"] = int(n)
    iterations = store.query_df(
        "SELECT coalesce(iteration, 1) AS iteration, count(*) AS attempts, "
        "count(*) FILTER (WHERE status = 'passed') AS passed FROM attempts GROUP BY 1 ORDER BY 1")
    return {
        "patterns": int(totals["patterns"]),
        "retired": int(totals["retired"]),
        "failures": failures,
        "repeated_failure_rate": round((failures - int(totals["patterns"])) / failures, 4) if failures else 0.0,
        "patterns_per_week": [per_week[w] for w in sorted(per_week)],
        "success_rate_by_iteration": [
            {"iteration": int(i), "attempts": int(a), "passed": int(p), "success_rate": round(p / a, 4)}
            for i, a, p in iterations.itertuples(index=False) if a],
    }
