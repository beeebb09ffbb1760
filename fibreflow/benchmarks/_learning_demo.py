"""The learning effect through the project's real loop: the autopilot on the demo repository, twice.

Run 1 starts with an empty knowledge base; run 2 gets the knowledge base run 1 left behind (the
same store) and the same attempts per feature. Both runs are the real pipeline: the ``claude``
agent against the scripted model (``data/demo/model_script.yaml``, no real model is called), the
runner's sandboxed attempts, the knowledge base's ``learnings`` before and ``after_iteration``
after each iteration. Per run and iteration: the share of attempts that pass, and the share of
failing attempts whose failure signature was already known when the iteration started (stored in
the knowledge base before the run, or failed with in an earlier iteration of the same run).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from fibreflow.store import Store


def run_demo(*, attempts: int, workers: int | None = None, workdir: Path | None = None) -> dict[str, Any]:
    """Both runs' figures; run 2's lists are the headline ``success_rate``/``repeat_failure_rate``."""
    from fibreflow.config import load_settings
    from fibreflow.demo.build import DEMO_DATA, demo_settings, fresh_repo

    with tempfile.TemporaryDirectory(prefix="ff-bench-learn-demo-") as tmp:
        root = workdir or Path(tmp)
        store = Store(root / "learning.duckdb", lock_timeout_s=60)
        store.migrate()
        settings = demo_settings(load_settings())
        runs = []
        for n in (1, 2):
            known = _signatures(store)
            started = time.monotonic()
            from fibreflow.autopilot import AutopilotOptions, run_autopilot

            options = AutopilotOptions(features_path=DEMO_DATA / "features.json", attempts=attempts, workers=workers,
                                       agent="claude", offline=True, agent_script=str(DEMO_DATA / "model_script.yaml"))
            result = run_autopilot(None, options, repo=fresh_repo(root / f"run{n}"), store=store, settings=settings,
                                   echo=lambda line: None)
            runs.append({"run_id": result.run_id, "knowledge_base_patterns_at_start": len(known),
                         **_by_iteration(store, result.run_id, known),
                         "wall_s": round(time.monotonic() - started, 1)})
    first, second = runs
    return {"success_rate": second["success_rate"], "repeat_failure_rate": second["repeat_failure_rate"],
            "runs": runs, "baseline": first, "scenario": "demo", "model": "scripted",
            "agent": "claude (offline, scripted replies from data/demo/model_script.yaml)",
            "attempts_per_feature": attempts}


def _signatures(store: Store) -> set[str]:
    from fibreflow.learning import FailureKnowledgeBase

    return {p["signature"] for p in FailureKnowledgeBase(store).list_patterns()}


def _by_iteration(store: Store, run_id: str, known: set[str]) -> dict[str, Any]:
    """Success and repeated-failure rates per iteration of one autopilot run's attempts."""
    from fibreflow.autopilot.build import load_attempts
    from fibreflow.build.features import Feature
    from fibreflow.learning import analyze_failure

    rows = store.query_df("SELECT DISTINCT run_id, feature_id FROM attempts WHERE run_id LIKE ? ORDER BY 1",
                          [f"{run_id}.%"]).to_dict("records")
    tried: dict[int, int] = {}
    passed: dict[int, int] = {}
    failed: dict[int, int] = {}
    repeated: dict[int, int] = {}
    seen = set(known)
    attempts = []
    for row in rows:
        feature = Feature(id=row["feature_id"], description=row["feature_id"])
        attempts += load_attempts(store, row["run_id"], feature)
    fresh: set[str] = set()  # parallel attempts of one iteration cannot learn from each other
    current = 0
    for attempt in sorted(attempts, key=lambda a: a.iteration):
        it = attempt.iteration
        if it != current:
            seen |= fresh
            current = it
        tried[it] = tried.get(it, 0) + 1
        if attempt.passed:
            passed[it] = passed.get(it, 0) + 1
            continue
        failed[it] = failed.get(it, 0) + 1
        signature = analyze_failure(attempt).error_pattern
        repeated[it] = repeated.get(it, 0) + (signature in seen)
        fresh.add(signature)
    its = range(1, max(tried, default=0) + 1)
    return {"success_rate": [round(passed.get(i, 0) / tried[i], 4) if tried.get(i) else None for i in its],
            "repeat_failure_rate": [round(repeated.get(i, 0) / failed[i], 4) if failed.get(i) else 0.0 for i in its],
            "attempts": [tried.get(i, 0) for i in its], "failed": [failed.get(i, 0) for i in its]}
