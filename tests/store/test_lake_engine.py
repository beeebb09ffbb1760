"""The DuckLake engine on the real PostgreSQL catalog: writers on two processes lose nothing,
compaction really merges files, and a bad catalog fails loudly without leaking its password."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from lake_support import Lake

from fibreflow.errors import StoreError
from fibreflow.redaction import redact_url
from fibreflow.store.lake import LakeEngine
from fibreflow.store.schema import MIGRATIONS, migration_sql

WRITER = textwrap.dedent("""
    import sys
    from fibreflow.store.lake import LakeEngine
    url, data, tag, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    engine = LakeEngine(url, data_path=data, inline_rows=10)
    for i in range(n):
        # a read-modify-write of one shared row and an append, in one unit of work: two hosts
        # doing this at once conflict in DuckLake unless the writer lock orders them
        with engine.connect(write=True) as con:
            con.execute("BEGIN TRANSACTION")
            total = con.execute("SELECT total FROM counter").fetchone()[0]
            con.execute("DELETE FROM counter")
            con.execute("INSERT INTO counter VALUES (?)", [total + 1])
            con.execute("INSERT INTO events SELECT ?, range FROM range(?)", [tag, 3 + i % 20])
            con.execute("COMMIT")
    engine.close()
""")


def test_writers_on_two_processes_lose_nothing(lake: Lake, tmp_path: Path) -> None:
    engine = LakeEngine(lake.url, data_path=lake.data_path)
    with engine.connect(write=True) as con:
        con.execute("CREATE TABLE counter (total INTEGER)")
        con.execute("INSERT INTO counter VALUES (0)")
        con.execute("CREATE TABLE events (writer VARCHAR, i INTEGER)")
    n = 25
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, lake.url, str(lake.data_path), tag, str(n)],
                              stderr=subprocess.PIPE, text=True) for tag in ("a", "b")]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    expected = sum(3 + i % 20 for i in range(n))
    with engine.connect(write=False) as con:
        assert con.execute("SELECT total FROM counter").fetchall() == [(2 * n,)]
        assert dict(con.execute("SELECT writer, count(*) FROM events GROUP BY writer").fetchall()) == \
            {"a": expected, "b": expected}
    engine.close()


def test_compact_merges_small_files_and_expires_snapshots(lake: Lake) -> None:
    engine = LakeEngine(lake.url, data_path=lake.data_path, inline_rows=10)
    with engine.connect(write=True) as con:
        con.execute("CREATE TABLE t (a INTEGER, b VARCHAR)")
    for _ in range(12):  # above the inlining limit: one Parquet file each
        with engine.connect(write=True) as con:
            con.execute("INSERT INTO t SELECT range, 'x' FROM range(40)")
    for _ in range(3):  # below it: inlined into the catalog
        with engine.connect(write=True) as con:
            con.execute("INSERT INTO t VALUES (1, 'small')")
    assert len(lake.parquet_files()) == 12
    report = engine.compact(retention_s=0)
    assert (report.files_before, report.files_after) == (12, 1)
    assert report.inlined_rows_flushed == 3
    assert report.snapshots_after < report.snapshots_before
    assert len(lake.parquet_files()) == 1
    with engine.connect(write=False) as con:
        assert con.execute("SELECT count(*), count(*) FILTER (b = 'small') FROM t").fetchone() == (483, 3)
    engine.close()


def test_compact_keeps_snapshots_inside_the_retention(lake: Lake) -> None:
    engine = LakeEngine(lake.url, data_path=lake.data_path, inline_rows=0)
    with engine.connect(write=True) as con:
        con.execute("CREATE TABLE t (a INTEGER)")
    for i in range(4):
        with engine.connect(write=True) as con:
            con.execute("INSERT INTO t VALUES (?)", [i])
    report = engine.compact(retention_s=3600)
    # merged into one live file, but the old ones stay for the snapshots an hour keeps readable
    assert report.files_after == 1 and report.snapshots_after >= report.snapshots_before
    assert len(lake.parquet_files()) > 1
    engine.close()


@pytest.mark.parametrize("conninfo", ["dbname=ff_lake_no_such_db host=127.0.0.1 user=postgres password=s3cr3t-pw",
                                      "dbname=test host=127.0.0.1 port=1 user=postgres password=s3cr3t-pw"])
def test_a_refusing_catalog_is_a_clear_error_without_the_password(tmp_path: Path, conninfo: str) -> None:
    engine = LakeEngine("ducklake:postgres:" + conninfo, data_path=tmp_path / "data")
    with pytest.raises(StoreError) as err, engine.connect(write=False):
        pass
    message = str(err.value)
    assert "s3cr3t-pw" not in message and "s3cr3t-pw" not in repr(engine)
    assert "ducklake:postgres:" in message and "password=***" in message
    assert not list(tmp_path.rglob("*.duckdb")), "no local file may stand in for the lake"


def test_a_lake_needs_a_postgres_catalog_and_a_data_path(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="ducklake:postgres:<libpq conninfo>"):
        LakeEngine("ducklake:sqlite:meta.sqlite", data_path=tmp_path)
    with pytest.raises(StoreError, match="store.data_path"):
        LakeEngine("ducklake:postgres:dbname=test password=pw", data_path=None)


def test_redaction_covers_both_conninfo_forms() -> None:
    assert redact_url("dbname=x password='a b' host=h") == "dbname=x password=*** host=h"
    assert redact_url('at "host=h password=pw": refused') == 'at "host=h password=***": refused'
    assert redact_url("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


def test_every_migration_drops_what_a_lake_cannot_hold() -> None:
    for migration in MIGRATIONS:
        lake_sql = migration_sql(migration, constraints=False)
        assert not re.search(r"PRIMARY\s+KEY|UNIQUE|nextval|SEQUENCE|\bINDEX\b", lake_sql, re.IGNORECASE)
        assert migration_sql(migration) == migration.sql
    first = migration_sql(MIGRATIONS[0], constraints=False)
    assert "rule_key VARCHAR," in first and "id BIGINT," in first


def test_a_configured_lake_that_refuses_stops_every_command_with_exit_2(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from fibreflow.cli import main

    config = tmp_path / "fibreflow.yaml"
    config.write_text("store:\n  url: 'ducklake:postgres:dbname=test host=127.0.0.1 port=1 user=postgres "
                      f"password=s3cr3t-pw'\n  data_path: '{tmp_path / 'data'}'\n")
    monkeypatch.setenv("FIBREFLOW_CONFIG", str(config))
    for argv in (["learn", "list"], ["store", "compact"], ["sla", "compliance", "--json"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "ducklake:postgres:dbname=test host=127.0.0.1 port=1" in err and "s3cr3t-pw" not in err, err
        assert "cannot attach the DuckLake catalog" in err
    assert not list(tmp_path.rglob("*.duckdb")), "no local file may stand in for the lake"


def test_a_commit_that_loses_a_race_with_an_outside_writer_is_run_again(lake: Lake) -> None:
    import duckdb

    from fibreflow.store.extensions import load_extension
    from fibreflow.store.lake import is_conflict

    engine = LakeEngine(lake.url, data_path=lake.data_path)
    with engine.connect(write=True) as con:
        con.execute("CREATE TABLE t (k VARCHAR, n INTEGER)")
        con.execute("INSERT INTO t VALUES ('a', 0)")
    outside = duckdb.connect()  # a writer that does not take fibreflow's lock
    load_extension(outside, "ducklake")
    load_extension(outside, "postgres_scanner")
    outside.execute(f"ATTACH '{lake.url}' AS other (DATA_PATH '{lake.data_path}')")
    tries: list[int] = []

    def work(con: duckdb.DuckDBPyConnection) -> int:
        tries.append(1)
        con.execute("BEGIN TRANSACTION")
        con.execute("UPDATE t SET n = n + 1 WHERE k = 'a'")
        if len(tries) == 1:  # the outside writer commits first: ours must lose, then go again
            outside.execute("UPDATE other.t SET n = n + 10 WHERE k = 'a'")
        con.execute("COMMIT")
        return len(tries)

    assert engine.run(work) == 2
    with engine.connect(write=False) as con:
        assert con.execute("SELECT n FROM t").fetchall() == [(11,)]

    def always_loses(con: duckdb.DuckDBPyConnection) -> None:
        con.execute("BEGIN TRANSACTION")
        con.execute("UPDATE t SET n = n + 1")
        outside.execute("UPDATE other.t SET n = n + 1")
        con.execute("COMMIT")

    with pytest.raises(StoreError, match="conflict") as err:
        engine.run(always_loses, retries=2)
    assert not is_conflict(err.value)  # reported as a StoreError naming the lake
    assert lake.dbname in str(err.value)
    outside.close()
    engine.close()


def test_engines_of_one_process_share_one_attachment(lake: Lake) -> None:
    import psycopg

    def backends() -> int:
        with psycopg.connect("dbname=test host=127.0.0.1 user=postgres", autocommit=True) as pg:
            row = pg.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [lake.dbname]).fetchone()
        return int(row[0]) if row else 0

    first = LakeEngine(lake.url, data_path=lake.data_path)
    with first.connect(write=True) as con:
        con.execute("CREATE TABLE t (a INTEGER)")
    one = backends()
    more = [LakeEngine(lake.url, data_path=lake.data_path) for _ in range(4)]
    for i, engine in enumerate(more):  # as a Store() per call would make them
        with engine.connect(write=True) as con:
            con.execute("INSERT INTO t VALUES (?)", [i])
    assert backends() == one
    first.close()
    for engine in more[:-1]:
        engine.close()
    with more[-1].connect(write=False) as con:  # the last one still holds the lake
        assert con.execute("SELECT count(*) FROM t").fetchone() == (4,)
    more[-1].close()
    assert backends() == 0
    with pytest.raises(StoreError, match="closed"), more[-1].connect(write=False):
        pass
