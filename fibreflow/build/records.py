"""The build's rows in the store: ``runs``, ``features`` and ``attempts`` are written here only.

Owning the three tables in one module keeps their write paths, and so their meaning, in one
place: the runner records a run as it goes, the autopilot marks a feature's winner, and the
twin's sample history inserts finished builds, all through these functions. Attempts of a run
go through the run's ``BatchWriter``, because many worker threads finish attempts at once.

A run ends ``passed``, ``failed``, ``error``, ``cancelled`` (SIGINT or SIGTERM: its unfinished
features end ``cancelled`` too) or ``crashed``: its row names the orchestrator process (pid, start
time, host), and ``mark_crashed_runs``, which the first command to open the store runs, marks a
``running`` run whose orchestrator on this host is gone (no such pid, or the pid now belongs to a
process that started at another time) ``crashed``, with the time that was noticed, and its
unfinished features with it.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fibreflow.build.attempt import AgentAttempt
from fibreflow.build.features import FeatureList
from fibreflow.clock import utc_now
from fibreflow.sandbox.state import owner_alive, owner_record
from fibreflow.store import BatchWriter, Store

AttemptRecorder = Callable[[AgentAttempt], None]
"""Stores one finished attempt (``run_attempt`` calls it once, in ``finally``)."""

#: columns of ``features`` that change while a run goes on
_FEATURE_UPDATES = frozenset({"status", "solved_tier", "winner_attempt_id", "started_at", "ended_at", "reason",
                              "data_gate", "data_violations"})
#: feature states that a run's end closes (the others are final already)
_OPEN_FEATURES = ("pending", "running")


def orchestrator() -> dict[str, Any]:
    """This process as a run's orchestrator: the ``runs`` columns that tell whether it still runs."""
    owner = owner_record()  # the pid and its start time in clock ticks since boot (None if unreadable)
    return {"orchestrator_pid": owner["owner_pid"], "orchestrator_start": owner["owner_start"],
            "orchestrator_host": socket.gethostname()}


def start_run(store: Store, run_id: str, features: FeatureList, *, backend: str, profile: str, agent: str,
              attempts_per_feature: int, workers: int, started_at: dt.datetime) -> None:
    """The run's row (``running``) and one ``pending`` row per feature."""
    store.insert_rows("runs", [{
        "run_id": run_id, "goal": features.goal, "source": features.source, "status": "running",
        "backend": backend, "profile": profile, "agent": agent, "attempts_per_feature": attempts_per_feature,
        "workers": workers, "started_at": started_at, **orchestrator()}])
    store.insert_rows("features", [{
        "run_id": run_id, "feature_id": f.id, "description": f.description,
        "dependencies": json.dumps(list(f.dependencies)), "test_command": f.test_command,
        "status": "pending"} for f in features])


def finish_run(store: Store, run_id: str, *, status: str, error: str | None, ended_at: dt.datetime) -> None:
    """How the run ended."""
    store.execute("UPDATE runs SET status = ?, ended_at = ?, error = ? WHERE run_id = ?",
                  [status, ended_at, error, run_id])


def close_features(store: Store, run_id: str, *, status: str, ended_at: dt.datetime | None) -> int:
    """End every feature of the run that had not ended (``pending``, ``running``) as ``status``;
    returns how many."""
    with store.connect(write=True) as con:
        found = con.execute("SELECT count(*) FROM features WHERE run_id = ? AND status IN (?, ?)",
                            [run_id, *_OPEN_FEATURES]).fetchone()
        con.execute("UPDATE features SET status = ?, ended_at = coalesce(ended_at, ?) "
                    "WHERE run_id = ? AND status IN (?, ?)", [status, ended_at, run_id, *_OPEN_FEATURES])
    return int(found[0]) if found else 0


def mark_crashed_runs(store: Store) -> list[str]:
    """Mark ``crashed`` every ``running`` run whose orchestrator process on this host is gone.

    Gone: no process has its pid, or the process with that pid started at another time (the pid
    was reused). Runs of other hosts, and rows that name no orchestrator (older rows, sample
    histories), are left alone: nothing here can tell. ``crash_noticed_at`` is when this noticed
    it (``ended_at`` stays empty: when the process died is not known), ``error`` says which
    process; the run's ``pending`` and ``running`` features become ``crashed`` too. Returns the
    run ids marked.
    """
    host = socket.gethostname()
    with store.connect() as con:
        candidates = con.execute(
            "SELECT run_id, orchestrator_pid, orchestrator_start FROM runs WHERE status = 'running' "
            "AND orchestrator_host = ? AND orchestrator_pid IS NOT NULL", [host]).fetchall()
    # the sandbox registry's liveness rule: the pid runs and, where recorded, started at that time
    crashed = [(run_id, int(pid)) for run_id, pid, start in candidates
               if not owner_alive({"owner_pid": int(pid), "owner_start": None if start is None else int(start)})]
    if not crashed:
        return []
    noticed = utc_now()
    with store.connect(write=True) as con:
        con.execute("BEGIN TRANSACTION")
        try:
            for run_id, pid in crashed:
                # status = 'running' again: the run may have ended since it was read
                con.execute("UPDATE runs SET status = 'crashed', crash_noticed_at = ?, error = coalesce(error, ?) "
                            "WHERE run_id = ? AND status = 'running'",
                            [noticed, f"its orchestrator (pid {pid} on {host}) ended without finishing it", run_id])
                con.execute("UPDATE features SET status = 'crashed' WHERE run_id = ? AND status IN (?, ?)",
                            [run_id, *_OPEN_FEATURES])
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return [run_id for run_id, _ in crashed]


def update_feature(store: Store, run_id: str, feature_id: str, **values: object) -> None:
    """Set columns of one feature's row (status, solved_tier, winner_attempt_id, started_at, ended_at,
    reason, data_gate, data_violations)."""
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


__all__ = ["AttemptRecorder", "attempt_recorder", "close_features", "finish_run", "insert_attempts",
           "insert_features", "insert_runs", "mark_crashed_runs", "orchestrator", "set_winner", "start_run",
           "update_feature"]
