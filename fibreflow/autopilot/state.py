"""An autopilot run and its steps in DuckDB: ``autopilot_runs`` and ``autopilot_steps``.

Every try of every step is one ``autopilot_steps`` row: inserted as ``running`` before the step
starts, updated with its outcome (``completed``, ``skipped``, ``failed``, ``interrupted``) and
detail when it ends. A process killed mid-step leaves its row ``running``; resuming first marks
such rows ``crashed`` (``RunLog.close_stale_steps``: the run's owner is gone by then), then runs
each step whose latest try did not complete and reuses the recorded detail of those that did, so
nothing completed is done twice and no row says ``running`` that is not. State changes go through :meth:`RunLog.claim`, a compare-and-
set under the store's write lock, so two ``approve`` calls cannot both deploy.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fibreflow.clock import utc_now
from fibreflow.errors import AutopilotError, ConfigError
from fibreflow.store import Store
from fibreflow.store.discovery import pid_alive

STATES = ("running", "failed", "committed", "awaiting_approval", "deploying", "approved", "deployed",
          "deploy_blocked", "deploy_failed", "rejected")
DONE = ("completed", "skipped")
_RUN_COLUMNS = ("run_id", "goal", "repo", "base_ref", "base_commit", "state", "options", "features", "branch",
                "commit_sha", "winner_attempt_id", "staging_url", "needs_review", "cost_usd", "owner_pid",
                "decided_by", "decision_reason", "decided_at", "error", "created_at", "updated_at")
_JSON = ("options", "features")



@dataclass
class Done:
    """What a step returns: its detail and how it ended (``completed``, ``skipped`` or ``failed``
    for a step whose failure does not stop the run)."""

    detail: dict[str, Any] = field(default_factory=dict)
    status: str = "completed"


@dataclass(frozen=True)
class StepRow:
    """The latest try of one step."""

    step: str
    feature_id: str | None
    seq: int
    try_no: int
    status: str
    detail: dict[str, Any]
    error: str | None
    started_at: dt.datetime
    ended_at: dt.datetime | None

    @property
    def duration_s(self) -> float | None:
        return None if self.ended_at is None else (self.ended_at - self.started_at).total_seconds()

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "feature_id": self.feature_id, "status": self.status, "try": self.try_no,
                "error": self.error, "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
                "detail": self.detail}


class RunLog:
    """One run's rows; every method is a short transaction of its own."""

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id

    # -- the run row ----------------------------------------------------------------------

    @classmethod
    def create(cls, store: Store, run_id: str, **values: Any) -> RunLog:
        """Insert the run (state ``running``, owned by this process)."""
        now = utc_now()
        row = {"run_id": run_id, "state": "running", "owner_pid": os.getpid(), "created_at": now, "updated_at": now,
               **{k: json.dumps(v) if k in _JSON else v for k, v in values.items()}}
        with store.connect(write=True) as con:
            if con.execute("SELECT 1 FROM autopilot_runs WHERE run_id = ?", [run_id]).fetchone():
                raise ConfigError(f"autopilot run {run_id} exists already; resume it with "
                                  f"`fibreflow build --resume {run_id}`", key="run_id")
            cols = ", ".join(row)
            con.execute(f"INSERT INTO autopilot_runs ({cols}) VALUES ({', '.join('?' * len(row))})",
                        list(row.values()))
        return cls(store, run_id)

    def get(self) -> dict[str, Any]:
        """The run row with JSON columns decoded; an unknown run id is a ConfigError."""
        with self.store.connect() as con:
            found = con.execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM autopilot_runs WHERE run_id = ?",
                                [self.run_id]).fetchone()
        if found is None:
            raise ConfigError(f"no autopilot run {self.run_id!r} in {self.store.path}", key="RUN_ID")
        row = dict(zip(_RUN_COLUMNS, found, strict=True))
        for key in _JSON:
            row[key] = json.loads(row[key]) if row[key] else None
        return row

    def update(self, **values: Any) -> None:
        """Set columns of the run row (``updated_at`` too)."""
        values = {k: json.dumps(v) if k in _JSON else v for k, v in values.items()}
        values["updated_at"] = utc_now()
        cols = ", ".join(f"{k} = ?" for k in values)
        self.store.execute(f"UPDATE autopilot_runs SET {cols} WHERE run_id = ?", [*values.values(), self.run_id])

    def claim(self, from_states: Iterable[str], to_state: str, *, what: str,
              check: Callable[[dict[str, Any]], None] | None = None, **values: Any) -> str:
        """Move the run from one of ``from_states`` to ``to_state`` atomically; returns the old state.
        ``check(row)`` may veto by raising. Otherwise AutopilotError names the state it is in."""
        allowed = tuple(from_states)
        with self.store.connect(write=True) as con:
            found = con.execute("SELECT state, owner_pid FROM autopilot_runs WHERE run_id = ?",
                                [self.run_id]).fetchone()
            if found is None:
                raise ConfigError(f"no autopilot run {self.run_id!r} in {self.store.path}", key="RUN_ID")
            state, owner = found
            if check is not None:
                check({"state": state, "owner_pid": owner})
            if state not in allowed:
                raise AutopilotError(f"cannot {what} run {self.run_id}: it is {state} "
                                     f"(needs {' or '.join(allowed)})", step=what)
            sets = {"state": to_state, "updated_at": utc_now(), **values}
            con.execute(f"UPDATE autopilot_runs SET {', '.join(f'{k} = ?' for k in sets)} WHERE run_id = ?",
                        [*sets.values(), self.run_id])
        return str(state)

    # -- steps ----------------------------------------------------------------------------

    def close_stale_steps(self) -> int:
        """Mark ``crashed`` the step tries left ``running`` by a process that died mid-step; returns
        how many. Call it only while this process owns the run (after a successful ``claim``)."""
        now = utc_now()
        with self.store.connect(write=True) as con:
            found = con.execute("SELECT count(*) FROM autopilot_steps WHERE run_id = ? AND status = 'running'",
                                [self.run_id]).fetchone()
            con.execute("UPDATE autopilot_steps SET status = 'crashed', ended_at = ?, "
                        "error = coalesce(error, 'the process running this step ended without recording how; "
                        "noticed when the run was resumed') WHERE run_id = ? AND status = 'running'",
                        [now, self.run_id])
        return int(found[0]) if found else 0

    def steps(self) -> list[StepRow]:
        """The latest try of every step, in the order steps were first started."""
        with self.store.connect() as con:
            found = con.execute(
                "SELECT step, feature_id, seq, try_no, status, detail, error, started_at, ended_at, "
                "min(seq) OVER (PARTITION BY step) AS first_seq FROM autopilot_steps WHERE run_id = ? "
                "QUALIFY row_number() OVER (PARTITION BY step ORDER BY try_no DESC) = 1 ORDER BY first_seq",
                [self.run_id]).fetchall()
        return [StepRow(step, fid, int(seq), int(try_no), status, json.loads(detail) if detail else {}, error,
                        started, ended)
                for step, fid, seq, try_no, status, detail, error, started, ended, _ in found]

    def last(self, step: str) -> StepRow | None:
        """The latest try of ``step``."""
        return next((s for s in self.steps() if s.step == step), None)

    def run_step(self, step: str, fn: Callable[[], Done], *, feature_id: str | None = None,
                 echo: Callable[[str], None] | None = None) -> StepRow:
        """Run ``fn`` as a new try of ``step`` unless its latest try completed (or was skipped);
        AutopilotError from ``fn`` marks the try failed (with its detail) and propagates."""
        previous = self.last(step)
        if previous is not None and previous.status in DONE:
            return previous
        try_no = previous.try_no + 1 if previous is not None else 1
        started = utc_now()
        with self.store.connect(write=True) as con:
            found = con.execute("SELECT coalesce(max(seq), 0) + 1 FROM autopilot_steps WHERE run_id = ?",
                                [self.run_id]).fetchone()
            seq = found[0] if found else 1  # an aggregate always returns its one row
            con.execute("INSERT INTO autopilot_steps (run_id, seq, step, feature_id, try_no, status, started_at) "
                        "VALUES (?, ?, ?, ?, ?, 'running', ?)", [self.run_id, seq, step, feature_id, try_no, started])
        if echo is not None:
            echo(f"{step}: started" + (f" (try {try_no})" if try_no > 1 else ""))
        status, detail, error = "interrupted", {}, None
        try:
            done = fn()
            status, detail = done.status, done.detail
        except AutopilotError as exc:
            status, detail, error = "failed", exc.detail if isinstance(exc.detail, dict) else {}, str(exc)
            raise
        except Exception as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:  # a KeyboardInterrupt leaves "interrupted"; only a killed process leaves "running"
            ended = utc_now()
            self.store.execute("UPDATE autopilot_steps SET status = ?, detail = ?, error = ?, ended_at = ? "
                               "WHERE run_id = ? AND step = ? AND try_no = ?",
                               [status, json.dumps(detail, default=str), error, ended, self.run_id, step, try_no])
            if echo is not None:
                echo(f"{step}: {status} ({(ended - started).total_seconds():.1f}s)" + (f": {error}" if error else ""))
        return StepRow(step, feature_id, int(seq), try_no, status, detail, error, started, ended)


__all__ = ["DONE", "STATES", "Done", "RunLog", "StepRow", "pid_alive"]
