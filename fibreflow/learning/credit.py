"""Which attempts a pattern may take credit for: only those of the features or module it concerns.

A pattern is learned from failures of some features (``learned_patterns.features``) in some
module (``affected_module``). Retrieval may show it to any attempt, but an attempt of an
unrelated feature that passes says nothing about the advice: counting it made a pattern
"help 18/18" when 12 of those attempts were other features. So a pattern is scored on, and its
"helped X of Y" counts, only attempts whose feature is one the pattern was seen in, or whose
diff touches the pattern's module.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

from fibreflow.learning.analysis import module_of
from fibreflow.store import StoreReader

_DIFF_PATH = re.compile(r"^(?:\+\+\+|---) [ab]/(\S+)|^diff --git a/(\S+) b/", re.MULTILINE)


def modules_touched(diff: str | None) -> set[str]:
    """Dotted module names of the files a unified diff changes."""
    found: set[str] = set()
    for m in _DIFF_PATH.finditer(diff or ""):
        module = module_of(m.group(1) or m.group(2))
        if module:
            found.add(module)
    return found


def _same_module(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".") or a.endswith("." + b) or b.endswith("." + a)


def concerns(features: Iterable[str], module: str | None, feature_id: str | None, diff: str | None) -> bool:
    """Whether an attempt (its feature and diff) is one a pattern (its features and module) is about."""
    if feature_id and feature_id in set(features):
        return True
    return bool(module) and any(_same_module(module or "", m) for m in modules_touched(diff))


def credited_counts(store: StoreReader, pattern_ids: Sequence[str]) -> pd.DataFrame:
    """Per pattern: ``shown`` and ``helped`` counted over the attempts it concerns only
    (from ``pattern_events`` and the attempts' diffs). Columns: pattern_id, shown, helped."""
    if not pattern_ids:
        return pd.DataFrame({"pattern_id": pd.Series(dtype=str), "shown": pd.Series(dtype="int64"),
                             "helped": pd.Series(dtype="int64")})
    marks = ", ".join("?" for _ in pattern_ids)
    patterns = store.query_df(f"SELECT pattern_id, features, affected_module FROM learned_patterns "
                              f"WHERE pattern_id IN ({marks})", list(pattern_ids))
    events = store.query_df(
        "SELECT e.pattern_id, e.event, e.feature_id, a.diff FROM pattern_events e "
        "LEFT JOIN attempts a USING (attempt_id) "
        f"WHERE e.event IN ('shown', 'helped') AND e.pattern_id IN ({marks})", list(pattern_ids))
    about: dict[str, tuple[list[str], str | None]] = {
        r["pattern_id"]: (json.loads(r["features"] or "[]"), _text(r["affected_module"]))
        for r in patterns.to_dict("records")}
    counts = {pid: {"shown": 0, "helped": 0} for pid in pattern_ids}
    for e in events.to_dict("records"):
        features, module = about.get(e["pattern_id"], ([], None))
        if concerns(features, module, _text(e["feature_id"]), _text(e["diff"])):
            counts[e["pattern_id"]][e["event"]] += 1
    return pd.DataFrame([{"pattern_id": pid, **c} for pid, c in counts.items()])


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
