"""The build's rows in the store: ``runs``, ``features`` and ``attempts`` are written here only.

Owning the three tables in one module keeps their write paths, and so their meaning, in one
place: the runner records a run as it goes, the autopilot marks a feature's winner, and the
twin's sample history inserts finished builds, all through these functions. Attempts of a run
go through the run's ``BatchWriter``, because many worker threads finish attempts at once.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fibreflow.build.attempt import AgentAttempt
from fibreflow.build.features import FeatureList
from fibreflow.store import BatchWriter, Store

AttemptRecorder = Callable[[AgentAttempt], None]
"""Stores one finished attempt (``run_attempt`` calls it once, in ``finally``)."""

#: columns of ``features`` that change while a run goes on
_FEATURE_UPDATES = frozenset({"status", "solved_tier", "winner_attempt_id", "started_at", "ended_at"})


def start_run(store: Store, run_id: str, features: FeatureList, *, backend: str, profile: str, agent: str,
              attempts_per_feature: int, workers: int, started_at: dt.datetime) -> None:
    """The run's row (``running``) and one ``pending`` row per feature."""
    store.insert_rows("runs", [{
        "run_id": run_id, "goal": features.goal, "source": features.source, "status": "running",
        "backend": backend, "profile": profile, "agent": agent, "attempts_per_feature": attempts_per_feature,
        "workers": workers, "started_at": started_at}])
    store.insert_rows("features", [{
        "run_id": run_id, "feature_id": f.id, "description": f.description,
        "dependencies": json.dumps(list(f.dependencies)), "test_command": f.test_command,
        "status": "pending"} for f in features])


def finish_run(store: Store, run_id: str, *, status: str, error: str | None, ended_at: dt.datetime) -> None:
    """How the run ended."""
    store.execute("UPDATE runs SET status = ?, ended_at = ?, error = ? WHERE run_id = ?",
                  [status, ended_at, error, run_id])


def update_feature(store: Store, run_id: str, feature_id: str, **values: object) -> None:
    """Set columns of one feature's row (status, solved_tier, winner_attempt_id, started_at, ended_at)."""
    unknown = set(values) - _FEATURE_UPDATES
    if unknown:
        raise ValueError(f"features has no updatable column {', '.join(sorted(unknown))}")
    cols = ", ".join(f"{k} = ?" for k in values)
    store.execute(f"UPDATE features SET {cols} WHERE run_id = ? AND feature_id = ?",
                  [*values.values(), run_id, feature_id])


def set_winner(store: Store, run_id: str, feature_id: str, attempt_id: str | None) -> None:
    """The attempt the selection chose for a feature of a build."""
    update_feature(store, run_id, feature_id, winner_attempt_id=attempt_id)


def attempt_recorder(writer: BatchWriter) -> AttemptRecorder:
    """An ``AttemptRecorder`` that queues each attempt's row on ``writer``."""
    def record(attempt: AgentAttempt) -> None:
        writer.put("attempts", attempt.row())

    return record


def insert_runs(store: Store, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert finished or running ``runs`` rows as they are (a sample history); returns how many."""
    return store.insert_rows("runs", rows)


def insert_features(store: Store, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert ``features`` rows as they are (a sample history); returns how many."""
    return store.insert_rows("features", rows)


def insert_attempts(store: Store, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert ``attempts`` rows as they are (a sample history); returns how many."""
    return store.insert_rows("attempts", rows)


__all__ = ["AttemptRecorder", "attempt_recorder", "finish_run", "insert_attempts", "insert_features",
           "insert_runs", "set_winner", "start_run", "update_feature"]
