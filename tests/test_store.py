from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import threading
from pathlib import Path

import duckdb
import pytest

from fibreflow.errors import ForeignDatabaseError, StoreLockTimeout
from fibreflow.store import Store
from fibreflow.store.schema import LATEST_VERSION

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _row(name: str, i: int) -> dict:
    return {"name": name, "status": "ok", "value": float(i), "checked_at": NOW}


def test_migrate_creates_schema_and_is_idempotent(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.duckdb", lock_timeout_s=5)
    assert store.migrate() == LATEST_VERSION
    assert store.migrate() == LATEST_VERSION
    versions = store.query_df("SELECT version FROM schema_version ORDER BY version")["version"].tolist()
    assert versions == list(range(1, LATEST_VERSION + 1))


def test_readers_return_dataframes_with_utc_timestamps(store: Store) -> None:
    store.insert_rows("sla_checks", [_row("a", 1), _row("b", 2)])
    df = store.query_df("SELECT name, checked_at FROM sla_checks ORDER BY name")
    assert df["name"].tolist() == ["a", "b"]
    assert str(df["checked_at"].dt.tz) == "UTC"
    assert df["checked_at"].iloc[0] == NOW


def test_foreign_file_is_refused_and_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.duckdb"
    path.write_bytes(b"this is somebody's text file, not a database\n" * 10)
    before = path.read_bytes()
    with pytest.raises(ForeignDatabaseError, match="not a DuckDB file"):
        Store(path, lock_timeout_s=5).migrate()
    assert path.read_bytes() == before


def test_duckdb_file_of_another_application_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE invoices (id INTEGER)")
    con.execute("INSERT INTO invoices VALUES (1), (2)")
    con.close()
    with pytest.raises(ForeignDatabaseError, match="invoices"):
        Store(path, lock_timeout_s=5).migrate()
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT count(*) FROM invoices").fetchone()[0] == 2
    assert con.execute("SELECT count(*) FROM information_schema.tables").fetchone()[0] == 1
    con.close()


def test_newer_schema_is_refused(store: Store) -> None:
    store.execute("INSERT INTO schema_version VALUES (999, 'from the future', now())")
    with pytest.raises(ForeignDatabaseError, match="newer"):
        Store(store.path, lock_timeout_s=5).migrate()


def test_lock_timeout_names_the_lock_file(store: Store) -> None:
    import fcntl
    import os

    fd = os.open(store.lock_path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        other = Store(store.path, lock_timeout_s=0.3)
        other._ready = True
        with pytest.raises(StoreLockTimeout, match=r"\.lock"):
            other.scalar("SELECT 1")
    finally:
        os.close(fd)


def test_batch_writer_keeps_every_row_from_many_threads(store: Store) -> None:
    with store.writer(batch_size=50, flush_interval_s=0.02) as writer:
        threads = [threading.Thread(target=lambda t=t: [writer.put("sla_checks", _row(f"t{t}", i))
                                                        for i in range(250)]) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        writer.flush(timeout=30)
        assert writer.rows_written == 2000
    counts = store.query_df("SELECT name, count(*) AS n FROM sla_checks GROUP BY name")
    assert sorted(counts["n"].tolist()) == [250] * 8


def _write_many(path: str, name: str, n: int) -> None:
    s = Store(path, lock_timeout_s=60)
    for start in range(0, n, 20):
        s.insert_rows("sla_checks", [_row(name, i) for i in range(start, start + 20)])


def _read_many(path: str, n: int, out: mp.Queue) -> None:
    s = Store(path, lock_timeout_s=60)
    seen = [int(s.scalar("SELECT count(*) FROM sla_checks")) for _ in range(n)]
    out.put(seen)


def test_processes_share_the_store_without_lock_errors_or_lost_rows(store: Store) -> None:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    procs = [ctx.Process(target=_write_many, args=(str(store.path), f"w{i}", 400)) for i in range(2)]
    procs.append(ctx.Process(target=_read_many, args=(str(store.path), 30, out)))
    for p in procs:
        p.start()
    seen = out.get(timeout=120)
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert seen == sorted(seen)  # readers never see rows vanish
    assert store.scalar("SELECT count(*) FROM sla_checks") == 800


def test_migrations_are_numbered_in_order_without_gaps() -> None:
    from fibreflow.store.schema import MIGRATIONS

    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
