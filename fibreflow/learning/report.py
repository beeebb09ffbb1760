"""The data of the learning report and the dashboard's learning panel, gathered in one call.

``load_learning_report(days=..., db_path=...)`` (the notebook's parameters) reads the knowledge
base (``learned_patterns``, ``pattern_events``) and the attempts: how the base grew, the success
rate per iteration, the most frequent failure patterns of the window and what to fix next.
Figures are in :mod:`fibreflow.learning.views`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from fibreflow.learning.credit import credited_counts
from fibreflow.learning.stats import learning_stats
from fibreflow.store import Store, StoreReader


@dataclass(frozen=True)
class LearningReport:
    """Everything the learning report shows, for one window and optional run / agent filter."""

    start: dt.datetime
    end: dt.datetime
    first_seen: pd.DataFrame
    failures: pd.DataFrame
    iterations: pd.DataFrame
    patterns: pd.DataFrame
    suggestions: list[str]
    stats: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """A Markdown paragraph with the knowledge base's size and what learning changed."""
        s = self.stats
        rates = ", ".join(f"iteration {r['iteration']}: {r['success_rate']:.0%} of {r['attempts']}"
                          for r in s.get("success_rate_by_iteration", []))
        return (f"Window: {self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC.\n\n"
                f"**{s.get('patterns', 0)} failure patterns known** ({s.get('retired', 0)} retired) from "
                f"{s.get('failures', 0)} stored failures; repeated-failure rate "
                f"{s.get('repeated_failure_rate', 0.0):.0%}. Attempt success by iteration: {rates or 'no attempts'}.")


def load_learning_data(store: StoreReader, *, start: dt.datetime, end: dt.datetime, agent: str | None = None,
                       run_id: str | None = None) -> dict[str, Any]:
    """The report's DataFrames for ``start``..``end``, optionally only one agent's or run's."""
    ewhere = (" AND e.agent = ?" if agent else "") + (" AND a.run_id = ?" if run_id else "")
    eparams = ([agent] if agent else []) + ([run_id] if run_id else [])
    awhere = (" AND agent = ?" if agent else "") + (" AND run_id = ?" if run_id else "")
    q = store.query_df
    seen = "FROM pattern_events e LEFT JOIN attempts a USING (attempt_id) WHERE e.event = 'seen'" + ewhere
    patterns = q(f"SELECT p.pattern_id, p.signature, p.error_type, p.affected_module, p.suggested_fix,"
                 f" p.weight, p.shown, p.helped, p.retired, s.n FROM learned_patterns p JOIN ("
                 f"  SELECT e.pattern_id, count(*) AS n {seen} AND e.event_at > ? AND e.event_at <= ?"
                 "  GROUP BY 1) s USING (pattern_id) ORDER BY s.n DESC, p.pattern_id LIMIT 10",
                 [*eparams, start, end])
    # "helped X of Y" counts only the attempts each pattern concerns (learning.credit)
    credit = credited_counts(store, list(patterns["pattern_id"]))
    patterns = patterns.drop(columns=["shown", "helped"]).merge(credit, on="pattern_id", how="left")
    patterns[["shown", "helped"]] = patterns[["shown", "helped"]].fillna(0).astype("int64")
    patterns = patterns[["pattern_id", "signature", "error_type", "affected_module", "suggested_fix", "weight",
                         "shown", "helped", "retired", "n"]]
    return {
        "first_seen": q(f"SELECT e.pattern_id, min(e.event_at) AS first {seen} GROUP BY 1", eparams),
        "failures": q(f"SELECT date_trunc('day', e.event_at) AS day, count(*) AS n {seen}"
                      " AND e.event_at > ? AND e.event_at <= ? GROUP BY 1 ORDER BY 1", [*eparams, start, end]),
        "iterations": q("SELECT coalesce(iteration, 1) AS iteration, count(*) AS attempts,"
                        " count(*) FILTER (WHERE status = 'passed') AS passed FROM attempts"
                        " WHERE started_at > ? AND started_at <= ?" + awhere + " GROUP BY 1 ORDER BY 1",
                        [start, end, *eparams]),
        "patterns": patterns,
        "suggestions": suggestions(patterns),
        "start": start, "end": end,
    }


def suggestions(patterns: pd.DataFrame, *, limit: int = 5) -> list[str]:
    """What to fix next: frequent patterns whose advice has not helped yet, and advice to rewrite."""
    out: list[str] = []
    if patterns.empty:
        return out
    live = patterns[~patterns["retired"].astype(bool)]
    ranked = live.assign(score=live["n"] * (1 - live["helped"] / live["shown"].clip(lower=1)))
    for p in ranked.sort_values("score", ascending=False).head(limit).itertuples():
        where = f" in {p.affected_module}" if isinstance(p.affected_module, str) and p.affected_module else ""
        out.append(f"{p.error_type}{where}: {p.suggested_fix or 'no fix suggested yet'} "
                   f"(seen {p.n}x; helped {p.helped} of the {p.shown} attempts it was shown to)")
    for p in live.itertuples():
        if p.shown >= 5 and p.helped / p.shown < 0.2:
            out.append(f"the advice for '{shorten(p.signature)}' rarely helps ({p.helped}/{p.shown}): rewrite it")
    return out


def shorten(text: str, n: int = 48) -> str:
    """``text`` cut to ``n`` characters with an ellipsis."""
    return text if len(text) <= n else text[: n - 1] + "…"


def load_learning_report(*, days: float = 30, db_path: str | Path | None = None,
                         now: dt.datetime | None = None) -> LearningReport:
    """The learning report over the last ``days`` days of the store at ``db_path`` (None: configured)."""
    store = Store(db_path) if db_path else Store()
    store.migrate()
    end = now or dt.datetime.now(dt.UTC)
    start = end - dt.timedelta(days=days)
    data = load_learning_data(store, start=start, end=end)
    return LearningReport(stats=learning_stats(store), **data)
