"""``fibreflow store serve``: a real server process, real clients, real faults."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from server_support import free_port, serve_env, start_server

from fibreflow.errors import StoreError
from fibreflow.store import Store
from fibreflow.store.discovery import ServerRecord, record_path, write_record
from fibreflow.store.schema import LATEST_VERSION, MIGRATIONS

pytestmark = pytest.mark.slow
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def _check(i: int, name: str = "c") -> dict[str, object]:
    return {"name": f"{name}-{i}", "status": "ok", "value": float(i), "checked_at": NOW + dt.timedelta(seconds=i)}


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fibreflow.cli", *args], env=env, capture_output=True, text=True,
                          cwd=Path(env["FIBREFLOW_DB"]).parent, timeout=300)


def _rows_in_file(db: Path, sql: str) -> list[tuple[object, ...]]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_every_store_call_works_through_the_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "served.duckdb"
    server = start_server(db)
    try:
        monkeypatch.setenv("FIBREFLOW_STORE_TOKEN", server.token())
        store = Store.from_url(server.url)
        assert store.engine.mode == "quack"
        assert store.migrate() == LATEST_VERSION
        assert store.schema_version() == LATEST_VERSION
        assert store.insert_rows("sla_checks", [_check(i) for i in range(3)]) == 3
        df = store.query_df("SELECT name, value, checked_at FROM sla_checks WHERE value >= ? ORDER BY name", [1.0])
        assert list(df["name"]) == ["c-1", "c-2"]
        assert str(df["checked_at"].dt.tz) in ("UTC", "Etc/UTC")
        assert df["checked_at"].iloc[0] == pd.Timestamp(NOW + dt.timedelta(seconds=1))
        store.execute("UPDATE sla_checks SET status = $status WHERE name = $name", {"status": "late", "name": "c-2"})
        assert store.scalar("SELECT status FROM sla_checks WHERE name = ?", ["c-2"]) == "late"
        store.execute("DELETE FROM sla_checks WHERE name = ?", ["c-0"])
        assert store.scalar("SELECT count(*) FROM sla_checks") == 2
        # a transaction is one server session: a rolled-back write leaves nothing
        with store.connect(write=True) as con:
            con.execute("BEGIN TRANSACTION")
            con.execute("INSERT INTO sla_checks (name, status, checked_at) VALUES (?, 'ok', ?)", ["gone", NOW])
            assert con.execute("SELECT count(*) FROM sla_checks WHERE name = 'gone'").fetchone() == (1,)
            con.execute("ROLLBACK")
        assert store.scalar("SELECT count(*) FROM sla_checks WHERE name = 'gone'") == 0
        # constraints hold on the server, and a failed insert writes none of its rows
        store.execute("INSERT INTO alert_state (rule_key, sla_name, active) VALUES ('k', 's', true)")
        with pytest.raises(duckdb.ConstraintException, match="Duplicate key"):
            store.insert_rows("alert_state", [{"rule_key": "k2", "sla_name": "s", "active": False},
                                              {"rule_key": "k", "sla_name": "s", "active": False}])
        assert store.scalar("SELECT count(*) FROM alert_state") == 1
        with store.writer(flush_interval_s=0.05) as writer:
            for i in range(50):
                writer.put("sla_checks", _check(i, "w"))
        assert store.scalar("SELECT count(*) FROM sla_checks WHERE name LIKE 'w-%'") == 50
        store.close()
    finally:
        assert server.stop() in (0, 143)
    assert not record_path(db).exists()
    assert _rows_in_file(db, "SELECT count(*) FROM sla_checks") == [(52,)]


def test_the_server_migrates_an_old_file_when_it_starts(tmp_path: Path) -> None:
    db = tmp_path / "old.duckdb"
    con = duckdb.connect(str(db))
    con.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, description VARCHAR, "
                "applied_at TIMESTAMPTZ NOT NULL)")
    for migration in MIGRATIONS[:3]:
        con.execute(migration.sql)
        con.execute("INSERT INTO schema_version VALUES (?, ?, now())", [migration.version, migration.description])
    con.close()
    server = start_server(db)
    try:
        assert f"schema version {LATEST_VERSION}" in server.log.read_text()
    finally:
        server.stop()
    assert _rows_in_file(db, "SELECT max(version) FROM schema_version") == [(LATEST_VERSION,)]


def test_a_plain_store_of_the_file_goes_through_its_running_server(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "shared.duckdb"
    server = start_server(db)
    try:
        monkeypatch.delenv("FIBREFLOW_STORE_TOKEN", raising=False)  # found beside the file, no flag, no env
        store = Store(db, lock_timeout_s=5)
        assert "store server found" in store.describe() and server.url in store.describe()
        # the server holds the file's lock for its whole life: no one could open the file meanwhile ...
        fd = os.open(store.lock_path, os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        # ... and yet a plain Store of the file writes and reads (through the server)
        assert store.insert_rows("sla_checks", [_check(i) for i in range(4)]) == 4
        assert store.scalar("SELECT count(*) FROM sla_checks") == 4
        record = json.loads(record_path(db).read_text())
        assert record["pid"] == server.proc.pid and record["port"] == server.port
        assert "token" not in record  # only the path of the 0600 token file
        assert oct(os.stat(record["token_file"]).st_mode & 0o777) == "0o600"
        doctor = json.loads(_cli(["doctor", "--json"], serve_env(db)).stdout)
        assert doctor["store"] == str(db)
        assert f"store server found: {server.url}, pid {server.proc.pid}" in doctor["store_mode"]
    finally:
        server.stop()
    assert _rows_in_file(db, "SELECT count(*) FROM sla_checks") == [(4,)]
    # the server gone, the same Store falls back to the file itself (its lock is free again)
    assert Store(db, lock_timeout_s=5).scalar("SELECT count(*) FROM sla_checks") == 4


def test_a_stale_record_is_ignored_and_removed(tmp_path: Path) -> None:
    db = tmp_path / "stale.duckdb"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    write_record(ServerRecord(pid=dead.pid, host="127.0.0.1", port=free_port(), started="2026-01-01T00:00:00+00:00",
                              db=str(db), token_file=str(tmp_path / "none")))
    store = Store(db, lock_timeout_s=5)
    assert store.insert_rows("sla_checks", [_check(1)]) == 1
    assert not record_path(db).exists()


def test_a_second_server_for_the_file_refuses_and_names_the_first(tmp_path: Path) -> None:
    db = tmp_path / "one.duckdb"
    first = start_server(db)
    try:
        second = _cli(["store", "serve", "--port", str(free_port())], serve_env(db))
        assert second.returncode != 0
        assert f"pid {first.proc.pid}" in second.stderr and first.url in second.stderr
        assert json.loads(record_path(db).read_text())["pid"] == first.proc.pid  # the first is untouched
    finally:
        first.stop()


def test_wrong_token_and_a_server_that_is_down_exit_2_naming_the_url(tmp_path: Path) -> None:
    db = tmp_path / "guarded.duckdb"
    server = start_server(db)
    local = tmp_path / "local.duckdb"
    try:
        wrong = "not-the-token-0123456789"
        res = _cli(["learn", "list"], serve_env(local, FIBREFLOW_STORE=server.url, FIBREFLOW_STORE_TOKEN=wrong))
        assert res.returncode == 2, res.stderr
        assert server.url in res.stderr and "token" in res.stderr and wrong not in res.stderr + res.stdout
    finally:
        server.stop()
    down = f"quack://127.0.0.1:{free_port()}"
    res = _cli(["learn", "list"], serve_env(local, FIBREFLOW_STORE=down, FIBREFLOW_STORE_TOKEN="whatever-token"))
    assert res.returncode == 2 and down in res.stderr
    typo = _cli(["learn", "list"], serve_env(local, FIBREFLOW_STORE="quak://127.0.0.1:9494"))
    assert typo.returncode == 2 and "quak://127.0.0.1:9494" in typo.stderr
    assert not local.exists()  # never a silent fallback to a local file


def test_a_server_killed_mid_write_keeps_committed_rows_and_a_restart_serves_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "killed.duckdb"
    token = "one-token-for-both-lives-0123"
    server = start_server(db, env=serve_env(db, FIBREFLOW_STORE_TOKEN=token))
    monkeypatch.setenv("FIBREFLOW_STORE_TOKEN", token)
    store = Store.from_url(server.url)
    committed = 0
    failure: list[BaseException] = []
    started = threading.Event()

    def write() -> None:
        nonlocal committed
        i = 0
        while True:
            try:
                committed += store.insert_rows("sla_checks", [_check(i * 10 + k, "k") for k in range(10)])
            except BaseException as exc:  # the failure is the point of this test
                failure.append(exc)
                return
            i += 1
            if committed >= 50:
                started.set()

    thread = threading.Thread(target=write)
    thread.start()
    assert started.wait(120)
    server.stop(signal.SIGKILL)
    thread.join(120)
    assert failure and isinstance(failure[0], StoreError)
    assert server.url in str(failure[0])
    with pytest.raises(StoreError, match=server.url):  # down: an error, not a local file
        store.scalar("SELECT count(*) FROM sla_checks")
    restarted = start_server(db, port=server.port, env=serve_env(db, FIBREFLOW_STORE_TOKEN=token))
    try:
        assert store.scalar("SELECT count(*) FROM sla_checks") >= committed  # the same client, reconnected
        assert store.insert_rows("sla_checks", [_check(10_000, "after")]) == 1
    finally:
        restarted.stop()


@pytest.mark.parametrize("backend", ["duckdb", "quack"])
def test_bench_store_reports_its_backend_and_loses_no_row(tmp_path: Path, backend: str) -> None:
    res = _cli(["bench", "store", "--backend", backend, "--writers", "2", "--readers", "1", "--rows", "100",
                "--batch", "25", "--seconds", "1", "--json"], serve_env(tmp_path / "unused.duckdb"))
    assert res.returncode == 0, res.stderr
    result = json.loads(res.stdout)
    assert (result["backend"], result["writers"], result["readers"]) == (backend, 2, 1)
    assert result["duckdb_version"] == duckdb.__version__
    assert result["rows_written"] == result["rows_found"] == 200 and result["errors"] == 0
    assert 0 < result["wait_p50_ms"] <= result["wait_p95_ms"] <= result["wait_max_ms"]


def test_a_taken_port_is_refused_naming_it_and_leaves_no_record(tmp_path: Path) -> None:
    db = tmp_path / "port.duckdb"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = _cli(["store", "serve", "--port", str(port)], serve_env(db))
    assert res.returncode != 0 and f"127.0.0.1:{port} is in use" in res.stderr
    assert not record_path(db).exists() and not db.exists()


HOSTILE = ["it's", "'); DROP TABLE sla_checks; --", "a ? b $1 $name", "/* c */ -- d", "back\\slash\\'",
           "new\nline", "ünïcødé ✓", "$$ dollar $$", '"double"', "::VARCHAR"]


def test_hostile_parameters_round_trip_through_the_server_as_data(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Parameters reach the server written into the statement as literals: text that looks
    like SQL must come back as the same text and leave every table in place."""
    db = tmp_path / "hostile.duckdb"
    server = start_server(db)
    try:
        monkeypatch.setenv("FIBREFLOW_STORE_TOKEN", server.token())
        store = Store.from_url(server.url)
        store.insert_rows("sla_checks", [{"name": text, "status": "ok", "checked_at": NOW, "reason": text}
                                         for text in HOSTILE])
        for text in HOSTILE:
            assert store.scalar("SELECT reason FROM sla_checks WHERE name = ?", [text]) == text
            assert store.scalar("SELECT count(*) FROM sla_checks WHERE name = $n AND reason = $n",
                                {"n": text}) == 1
        assert sorted(store.query_df("SELECT name FROM sla_checks")["name"]) == sorted(HOSTILE)
        store.close()
    finally:
        assert server.stop() in (0, 143)
