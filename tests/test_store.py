from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import threading
from pathlib import Path

import duckdb
import pytest
from store_support import filled_store, store_unchanged

import fibreflow.store.connection as connection
from fibreflow.errors import ForeignDatabaseError, StoreError, StoreLockTimeout
from fibreflow.store import Store
from fibreflow.store.schema import LATEST_VERSION, MIGRATIONS, Migration

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


def test_newer_schema_is_refused_naming_the_file_and_left_untouched(tmp_path: Path) -> None:
    path = filled_store(tmp_path / "future.duckdb").path
    con = duckdb.connect(str(path))  # as a newer fibreflow would have left it
    con.execute("INSERT INTO schema_version VALUES (?, 'from the future', now())", [LATEST_VERSION + 1])
    con.close()
    with store_unchanged(path):
        newer = Store(path, lock_timeout_s=5)
        with pytest.raises(ForeignDatabaseError) as info:
            newer.migrate()
        assert str(info.value).startswith(f"{path} has schema version {LATEST_VERSION + 1}, newer than")
        with pytest.raises(ForeignDatabaseError, match="newer"):  # nor does a read get past it
            newer.query_df("SELECT * FROM sla_checks")


@pytest.mark.parametrize("table, rows, bad", [
    ("sla_checks; DROP TABLE llm_calls", [{"name": "x"}], "sla_checks; DROP TABLE llm_calls"),
    ("sla_checks", [{"name": "x", 'status") VALUES (1); --': "ok"}], 'status") VALUES (1); --'),
    # a good group first: the bad column of the second group rolls it back as well
    ("sla_checks", [{"name": "ok", "status": "ok", "checked_at": dt.datetime(2026, 1, 1, tzinfo=dt.UTC)},
                    {"name": "x", "1st": "ok"}], "1st"),
], ids=["table", "column", "column-after-a-good-group"])
def test_a_bad_table_or_column_name_is_refused_naming_it_and_nothing_is_written(
        tmp_path: Path, table: str, rows: list[dict], bad: str) -> None:
    store = filled_store(tmp_path / "s.duckdb")
    with store_unchanged(store.path):
        with pytest.raises(StoreError) as info:
            store.insert_rows(table, rows)
        assert str(info.value) == f"invalid table or column name: {bad!r}"


def test_a_failing_migration_rolls_back_leaving_version_and_rows(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    store = filled_store(tmp_path / "s.duckdb")
    broken = Migration(LATEST_VERSION + 1, "half done", """
        CREATE TABLE half_done (id INTEGER);
        INSERT INTO half_done VALUES (1);
        DELETE FROM sla_checks;
        INSERT INTO no_such_table VALUES (1);
    """)
    monkeypatch.setattr(connection, "MIGRATIONS", (*MIGRATIONS, broken))
    monkeypatch.setattr(connection, "LATEST_VERSION", broken.version)
    with store_unchanged(store.path) as before:
        upgrading = Store(store.path, lock_timeout_s=5)
        with pytest.raises(StoreError) as info:
            upgrading.migrate()
        assert str(info.value).startswith(f"{store.path}: migration {broken.version} failed: ")
        assert "no_such_table" in str(info.value)
    assert before.schema_version == LATEST_VERSION and before.row_counts["sla_checks"] == 3


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


def _hold_reads(path: str, stop: str, done: str) -> None:
    """Read with the store held ~0.1 s each time, back to back, until ``stop`` exists."""
    import os
    import time

    s = Store(path, lock_timeout_s=60)
    for _ in range(300):  # a bound, should the test die before it says stop
        if os.path.exists(stop):
            break
        with s.connect() as con:
            con.execute("SELECT count(*) FROM sla_checks").fetchone()
            Path(done + ".reading").touch()
            time.sleep(0.1)
    Path(done).touch()


def test_a_writer_gets_in_while_readers_keep_the_store_busy(store: Store, tmp_path: Path) -> None:
    """Three readers that overlap always leave the shared lock held: a writer that waited for a
    gap would wait until they stop. A waiting writer holds the gate, so it goes next."""
    stop, done = tmp_path / "stop", tmp_path / "done"
    ctx = mp.get_context("spawn")
    readers = [ctx.Process(target=_hold_reads, args=(str(store.path), str(stop), f"{done}{i}")) for i in range(3)]
    for p in readers:
        p.start()
    try:
        for _ in range(1200):  # until all three read (processes that spawn take a moment)
            if all(Path(f"{done}{i}.reading").exists() for i in range(3)):
                break
            threading.Event().wait(0.05)
        assert all(p.is_alive() for p in readers)
        writer = Store(store.path, lock_timeout_s=120)
        writer.insert_rows("sla_checks", [_row("writer", 1)])
        # the write went in while every reader was still reading, not after they stopped
        assert not any(Path(f"{done}{i}").exists() for i in range(3))
        assert writer.scalar("SELECT count(*) FROM sla_checks WHERE name = 'writer'") == 1
    finally:
        stop.touch()
        for p in readers:
            p.join(timeout=60)
    assert all(Path(f"{done}{i}").exists() for i in range(3))
