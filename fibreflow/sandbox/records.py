"""``sandbox_sessions``: one row per sandbox, written here only.

The manager hands each finished session to a ``SessionWriter``; which one decides how the row
reaches the store: ``store_sessions`` writes it at once in its own short transaction (one
``fibreflow sandbox run``), ``queue_sessions`` puts it on a run's ``BatchWriter`` (a build, where
many attempts end together and would otherwise queue single-row transactions on the lock).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypedDict

from fibreflow.store import BatchWriter, Store


class SessionRow(TypedDict):
    """One ``sandbox_sessions`` row."""

    session_id: str
    backend: str
    profile: str
    isolation: str
    run_id: str | None
    feature_id: str
    attempt_id: str | None
    started_at: dt.datetime
    ended_at: dt.datetime
    cpu_s: float | None
    est_cost_usd: float | None
    outcome: str
    killed_reason: str | None


SessionWriter = Callable[[SessionRow], None]
"""Stores one finished session's row."""


def store_sessions(store: Store) -> SessionWriter:
    """A ``SessionWriter`` that writes each row to ``store`` at once."""
    def write(row: SessionRow) -> None:
        store.insert_rows("sandbox_sessions", [row])

    return write


def queue_sessions(writer: BatchWriter) -> SessionWriter:
    """A ``SessionWriter`` that queues each row on a run's ``writer``."""
    def put(row: SessionRow) -> None:
        writer.put("sandbox_sessions", row)

    return put


def insert_sessions(store: Store, rows: Iterable[Mapping[str, Any]]) -> int:
    """Insert ``sandbox_sessions`` rows as they are (a sample history); returns how many."""
    return store.insert_rows("sandbox_sessions", rows)


__all__ = ["SessionRow", "SessionWriter", "insert_sessions", "queue_sessions", "store_sessions"]
