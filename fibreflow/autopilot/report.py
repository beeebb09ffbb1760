"""The build report (``notebooks/build.ipynb``): one autopilot run, built now or read back.

The notebook's parameters are the keyword arguments of :func:`run_build_report`. With
``run_id`` of a run in the store, the report shows that run (``make demo`` renders the build it
just did); otherwise it runs the autopilot, by default offline with the scripted model on a
temporary copy of the shipped demo repository, so the report works with no key and no setup.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fibreflow.autopilot.options import AutopilotOptions
from fibreflow.autopilot.pipeline import run_autopilot
from fibreflow.autopilot.result import AutopilotResult, load_result
from fibreflow.build.progress import ProgressCallback
from fibreflow.store import Store, open_store

DEFAULT_GOAL = "Fix calc.add: it must return the sum of its arguments."


@dataclass
class BuildReport:
    """The run and two tables: its steps, and every attempt of every feature."""

    result: AutopilotResult
    steps: pd.DataFrame
    attempts: pd.DataFrame

    def _repr_html_(self) -> str:
        return self.result._repr_html_()


def attempts_table(store: Store, result: AutopilotResult) -> pd.DataFrame:
    """One row per attempt of the run's features: status, tests, coverage, cost, time, winner."""
    ids = [s["detail"].get("runner_run_id") for s in result.steps if s["step"].startswith("build:")]
    ids = [i for i in ids if i]
    winners = {f["winner"] for f in result.features if f["winner"]}
    if not ids:
        return pd.DataFrame(columns=["feature_id", "attempt_id", "status", "tests_passed", "tests_failed",
                                     "coverage", "cost_usd", "duration_s", "winner"])
    marks = ", ".join("?" * len(ids))
    df = store.query_df(f"SELECT feature_id, attempt_id, status, tests_passed, tests_failed, coverage, cost_usd, "
                        f"duration_s FROM attempts WHERE run_id IN ({marks}) ORDER BY started_at, attempt_id", ids)
    df["winner"] = df["attempt_id"].isin(winners)
    return df


def steps_table(result: AutopilotResult) -> pd.DataFrame:
    """One row per step: status, tries, seconds, error."""
    return pd.DataFrame([{k: s[k] for k in ("step", "status", "try", "duration_s", "error")} for s in result.steps],
                        columns=["step", "status", "try", "duration_s", "error"])


def run_build_report(goal: str | None = DEFAULT_GOAL, *, repo: str | None = None, features: str | None = None,
                     attempts: int = 3, workers: int | None = None, agent: str = "claude",
                     agent_command: str | None = None, agent_script: str | None = "demo_feature",
                     offline: bool = True, decompose_script: str | None = None,
                     coverage_floor: float | None = None, run_id: str | None = None, db_path: str | None = None,
                     progress: ProgressCallback | None = None, no_deploy: bool = True) -> BuildReport:
    """Show run ``run_id`` if the store has it, else build ``goal`` (see the module docstring); a
    build for the report ends at its committed branches unless ``no_deploy`` is False."""
    store = _store(db_path)
    if run_id and store.scalar("SELECT count(*) FROM autopilot_runs WHERE run_id = ?", [run_id]):
        result = load_result(store, run_id)
    else:
        options = AutopilotOptions(
            features_path=features, attempts=attempts, workers=workers, agent=agent, agent_command=agent_command,
            agent_script=agent_script, offline=offline, decompose_script=decompose_script,
            coverage_floor=coverage_floor, no_deploy=no_deploy)
        if repo is None:
            from fibreflow.models.scripts import write_demo_repo

            repo = str(write_demo_repo(Path(tempfile.mkdtemp(prefix="fibreflow-build-report-")) / "calc"))
        result = run_autopilot(goal, options, repo=repo, run_id=run_id, store=store, progress=progress)
    return BuildReport(result, steps_table(result), attempts_table(store, result))


def _store(db_path: str | None) -> Store:
    if db_path is None:
        from fibreflow.config import load_settings

        return open_store(load_settings().db_path)
    return open_store(db_path)


__all__ = ["DEFAULT_GOAL", "BuildReport", "attempts_table", "run_build_report", "steps_table"]
