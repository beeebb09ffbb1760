"""Checks that a bad input left the store as it was: every table's row count and the file's bytes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from fibreflow.store import Store

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class StoreSnapshot:
    """What a store file holds, seen from outside fibreflow (a raw read-only DuckDB connection)."""

    path: Path
    data: bytes
    row_counts: dict[str, int]
    schema_version: int


def snapshot(path: Path) -> StoreSnapshot:
    """The file's bytes, then the row count of every table and the schema version."""
    data = path.read_bytes()
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_schema = 'main' ORDER BY table_name").fetchall()]
        counts = {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
        version = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0] \
            if "schema_version" in tables else 0
    finally:
        con.close()
    return StoreSnapshot(path, data, counts, version)


@contextmanager
def store_unchanged(path: Path, *, check_bytes: bool = True) -> Iterator[StoreSnapshot]:
    """Assert on leaving the block that the store at ``path`` has the same rows (and bytes) as on entry."""
    before = snapshot(path)
    yield before
    after = snapshot(path)
    assert after.schema_version == before.schema_version
    assert after.row_counts == before.row_counts
    if check_bytes:
        assert after.data == before.data, f"{path} changed on disk"


def filled_store(path: Path) -> Store:
    """A migrated store at ``path`` with a few rows in two tables, so a lost or added row shows."""
    store = Store(path, lock_timeout_s=30)
    store.migrate()
    store.insert_rows("sla_checks", [{"name": f"check-{i}", "status": "ok", "value": float(i), "checked_at": NOW}
                                     for i in range(3)])
    store.insert_rows("llm_calls", [{"call_id": f"c{i}", "agent": "ops-bot", "tier": "sonnet",
                                     "model": "claude-sonnet-4-5", "try_no": 1, "input_tokens": 100,
                                     "output_tokens": 10, "cost_usd": 0.001, "status": "ok",
                                     "created_at": NOW} for i in range(2)])
    return store
