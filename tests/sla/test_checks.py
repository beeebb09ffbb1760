"""Check types against real sources: PostgreSQL, DuckDB and SQLite files, files, a local HTTP server."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import psycopg
import pytest

from fibreflow.errors import CheckError, MissingEnvError
from fibreflow.redaction import redact_url
from fibreflow.sla.checks import (
    CHECK_PARAMS,
    CHECK_TYPES,
    CommandParams,
    FileAgeParams,
    HeartbeatParams,
    HttpLatencyParams,
    SqlFreshnessParams,
    SyncLagParams,
    command,
    file_age,
    heartbeat,
    http_latency,
    run_check,
    sql_freshness,
    sync_lag,
)
from fibreflow.sla.localdata import LocalHTTPSource
from fibreflow.sla.sources import to_utc

UTC = dt.UTC


def ago(seconds: float) -> dt.datetime:
    return dt.datetime.now(UTC) - dt.timedelta(seconds=seconds)


@pytest.fixture
def non_utc_local_time(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run with a local zone far from UTC, so treating naive timestamps as local time shows."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_registry_has_the_six_types_with_parameter_models() -> None:
    names = ["sql_freshness", "sync_lag", "file_age", "http_latency", "heartbeat", "command"]
    assert list(CHECK_TYPES) == names
    assert list(CHECK_PARAMS) == names


# -- sql_freshness ----------------------------------------------------------------------


def test_postgres_freshness_follows_updated_at(pg_dsn: str, pg_table: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"CREATE TABLE {pg_table} (id int, updated_at timestamptz)")
        con.execute(f"INSERT INTO {pg_table} VALUES (1, now() - interval '100 seconds')")
    params = SqlFreshnessParams(url=pg_dsn, query=f"SELECT max(updated_at) FROM {pg_table}")
    assert sql_freshness(params, timeout=5).value == pytest.approx(100, abs=3)
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"UPDATE {pg_table} SET updated_at = now() - interval '10 seconds'")
    measured = sql_freshness(params, timeout=5)
    assert measured.value == pytest.approx(10, abs=3)
    assert measured.details["newest"].endswith("+00:00")


def test_postgres_naive_timestamp_is_utc(pg_dsn: str, pg_table: str, non_utc_local_time: None) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"CREATE TABLE {pg_table} (updated_at timestamp without time zone)")
        con.execute(f"INSERT INTO {pg_table} VALUES ((now() AT TIME ZONE 'UTC') - interval '50 seconds')")
    params = SqlFreshnessParams(url=pg_dsn, query=f"SELECT max(updated_at) FROM {pg_table}")
    assert sql_freshness(params, timeout=5).value == pytest.approx(50, abs=3)


def test_postgres_no_rows_and_null(pg_dsn: str, pg_table: str) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"CREATE TABLE {pg_table} (updated_at timestamptz)")
    for query in (f"SELECT max(updated_at) FROM {pg_table}", f"SELECT updated_at FROM {pg_table}"):
        with pytest.raises(CheckError, match="query returned no rows"):
            sql_freshness(SqlFreshnessParams(url=pg_dsn, query=query), timeout=5)


def test_unreachable_postgres_is_a_check_error_without_password() -> None:
    url = "postgresql://postgres:hunter2@127.0.0.1:1/test"
    started = time.monotonic()
    with pytest.raises(CheckError, match="cannot connect to postgresql://postgres:\\*\\*\\*@127.0.0.1:1") as info:
        sql_freshness(SqlFreshnessParams(url=url, query="SELECT now()"), timeout=2)
    assert "hunter2" not in str(info.value)
    assert time.monotonic() - started < 2 * 3 + 5


def test_postgres_bad_query_names_the_problem(pg_dsn: str) -> None:
    with pytest.raises(CheckError, match="query failed: .*no_such_table"):
        sql_freshness(SqlFreshnessParams(url=pg_dsn, query="SELECT max(x) FROM no_such_table"), timeout=5)


def test_duckdb_file_naive_and_aware(tmp_path: Path, non_utc_local_time: None) -> None:
    db = tmp_path / "src.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE t (naive TIMESTAMP, aware TIMESTAMPTZ)")
        con.execute("INSERT INTO t VALUES (?, ?)", [ago(30).replace(tzinfo=None), ago(70)])
    url = f"duckdb:///{db}"
    assert sql_freshness(SqlFreshnessParams(url=url, query="SELECT max(naive) FROM t"),
                         timeout=5).value == pytest.approx(30, abs=3)
    assert sql_freshness(SqlFreshnessParams(url=url, query="SELECT max(aware) FROM t"),
                         timeout=5).value == pytest.approx(70, abs=3)
    with pytest.raises(CheckError, match="query returned no rows"):
        sql_freshness(SqlFreshnessParams(url=url, query="SELECT naive FROM t WHERE false"), timeout=5)


def test_sqlite_text_and_epoch_timestamps(tmp_path: Path, non_utc_local_time: None) -> None:
    db = tmp_path / "src.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE t (text_ts TEXT, epoch REAL)")
        con.execute("INSERT INTO t VALUES (?, ?)",
                    [ago(40).replace(tzinfo=None).isoformat(sep=" "), ago(90).timestamp()])
    url = f"sqlite:///{db}"
    assert sql_freshness(SqlFreshnessParams(url=url, query="SELECT max(text_ts) FROM t"),
                         timeout=5).value == pytest.approx(40, abs=3)
    assert sql_freshness(SqlFreshnessParams(url=url, query="SELECT max(epoch) FROM t"),
                         timeout=5).value == pytest.approx(90, abs=3)


def test_sqlite_relative_path_and_missing_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with sqlite3.connect("rel.db") as con:
        con.execute("CREATE TABLE t (ts TEXT)")
        con.execute("INSERT INTO t VALUES (?)", [ago(5).isoformat()])
    assert sql_freshness(SqlFreshnessParams(url="sqlite:///rel.db", query="SELECT max(ts) FROM t"),
                         timeout=5).value == pytest.approx(5, abs=3)
    with pytest.raises(CheckError, match="sqlite database file not found: missing.db"):
        sql_freshness(SqlFreshnessParams(url="sqlite:///missing.db", query="SELECT 1"), timeout=5)


def test_unsupported_url_lists_supported_schemes() -> None:
    with pytest.raises(CheckError, match="postgresql://, duckdb:///, sqlite:///"):
        sql_freshness(SqlFreshnessParams(url="mysql://u:pw@host/db", query="SELECT 1"), timeout=5)


def test_value_that_is_not_a_timestamp(tmp_path: Path) -> None:
    db = tmp_path / "src.db"
    sqlite3.connect(db).close()
    with pytest.raises(CheckError, match="not a timestamp: 'yesterday'"):
        sql_freshness(SqlFreshnessParams(url=f"sqlite:///{db}", query="SELECT 'yesterday'"), timeout=5)


def test_to_utc_rules() -> None:
    assert to_utc("2024-05-01 12:00:00") == dt.datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert to_utc("2024-05-01T14:00:00+02:00") == dt.datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert to_utc(1714564800) == dt.datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert to_utc(1714564800_000) == dt.datetime(2024, 5, 1, 12, tzinfo=UTC)  # milliseconds
    assert to_utc(dt.date(2024, 5, 1)) == dt.datetime(2024, 5, 1, tzinfo=UTC)
    with pytest.raises(CheckError):
        to_utc(True)


# -- file_age ---------------------------------------------------------------------------


def _file(path: Path, age: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    ts = ago(age).timestamp()
    os.utime(path, (ts, ts))
    return path


def test_file_age_newest_matching_file(tmp_path: Path) -> None:
    _file(tmp_path / "DR0001.jpg", 500)
    newest = _file(tmp_path / "DR0002.jpg", 120)
    _file(tmp_path / "other.jpg", 1)  # does not match the glob
    _file(tmp_path / "sub" / "DR0003.jpg", 10)  # not matched without **/
    measured = file_age(FileAgeParams(path=str(tmp_path), glob="DR*.jpg"), timeout=5)
    assert measured.value == pytest.approx(120, abs=3)
    assert measured.details["newest"] == str(newest)
    recursive = file_age(FileAgeParams(path=str(tmp_path), glob="**/DR*.jpg"), timeout=5)
    assert recursive.value == pytest.approx(10, abs=3)


def test_file_age_no_match_and_missing_dir(tmp_path: Path) -> None:
    _file(tmp_path / "a.txt", 1)
    with pytest.raises(CheckError, match=r"no file matches 'DR\*.jpg' under"):
        file_age(FileAgeParams(path=str(tmp_path), glob="DR*.jpg"), timeout=5)
    with pytest.raises(CheckError, match="directory not found"):
        file_age(FileAgeParams(path=str(tmp_path / "nope")), timeout=5)


# -- http_latency -----------------------------------------------------------------------


def test_http_latency_ok_and_slow(http: LocalHTTPSource) -> None:
    http.route("/health", {"ok": True})
    http.route("/slow", {"ok": True}, delay=0.3)
    fast = http_latency(HttpLatencyParams(url=f"{http.url}/health"), timeout=5)
    assert not fast.violated and fast.details["status"] == 200 and fast.value > 0
    slow = http_latency(HttpLatencyParams(url=f"{http.url}/slow"), timeout=5)
    assert slow.value >= 0.3 and slow.value > fast.value  # the same server, 0.3 s of delay apart


def test_http_latency_non_2xx_is_a_violation_with_status(http: LocalHTTPSource) -> None:
    http.route("/down", {"error": "maintenance"}, status=503)
    measured = http_latency(HttpLatencyParams(url=f"{http.url}/down"), timeout=5)
    assert measured.violated
    assert measured.reason == f"HTTP 503 from {http.url}/down"
    accepted = http_latency(HttpLatencyParams(url=f"{http.url}/down", expect_status=[503]), timeout=5)
    assert not accepted.violated


def test_http_latency_connection_refused_is_an_error() -> None:
    with pytest.raises(CheckError, match="cannot reach http://127.0.0.1:1/"):
        http_latency(HttpLatencyParams(url="http://127.0.0.1:1/"), timeout=2)
    with pytest.raises(CheckError, match="not an http\\(s\\) URL: 'file:///etc/hostname'"):
        http_latency(HttpLatencyParams(url="file:///etc/hostname"), timeout=2)


# -- sync_lag ---------------------------------------------------------------------------


def test_sync_lag_postgres_to_http_json(pg_dsn: str, pg_table: str, http: LocalHTTPSource) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"CREATE TABLE {pg_table} (updated_at timestamptz)")
        con.execute(f"INSERT INTO {pg_table} VALUES (now() - interval '10 seconds')")
    http.route("/api/latest", {"data": {"updated_at": ago(250).isoformat()}})
    params = SyncLagParams.model_validate({
        "source": {"type": "sql", "url": pg_dsn, "query": f"SELECT max(updated_at) FROM {pg_table}"},
        "target": {"type": "http_json", "url": f"{http.url}/api/latest", "field": "data.updated_at"}})
    assert sync_lag(params, timeout=5).value == pytest.approx(240, abs=3)
    http.route("/api/latest", {"data": {"updated_at": ago(0).timestamp() * 1000}})  # ms epoch, ahead
    assert sync_lag(params, timeout=5).value == 0.0


def test_sync_lag_file_to_sqlite(tmp_path: Path) -> None:
    _file(tmp_path / "media" / "IMG1.jpg", 5)
    db = tmp_path / "t.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE uploads (uploaded_at TEXT)")
        con.execute("INSERT INTO uploads VALUES (?)", [ago(65).replace(tzinfo=None).isoformat()])
    params = SyncLagParams.model_validate({
        "source": {"type": "file", "path": str(tmp_path / "media"), "glob": "*.jpg"},
        "target": {"type": "sql", "url": f"sqlite:///{db}", "query": "SELECT max(uploaded_at) FROM uploads"}})
    assert sync_lag(params, timeout=5).value == pytest.approx(60, abs=3)


def test_sync_lag_missing_json_field(http: LocalHTTPSource, tmp_path: Path) -> None:
    _file(tmp_path / "a.jpg", 1)
    http.route("/api/latest", {"data": {}})
    params = SyncLagParams.model_validate({
        "source": {"type": "file", "path": str(tmp_path)},
        "target": {"type": "http_json", "url": f"{http.url}/api/latest", "field": "data.updated_at"}})
    with pytest.raises(CheckError, match="no field 'data.updated_at'"):
        sync_lag(params, timeout=5)


# -- heartbeat --------------------------------------------------------------------------


def test_heartbeat_table_column_and_query(tmp_path: Path) -> None:
    db = tmp_path / "q.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE sync_log (synced_at TEXT)")
        con.executemany("INSERT INTO sync_log VALUES (?)",
                        [(ago(a).replace(tzinfo=None).isoformat(sep=" "),) for a in (900, 170, 400)])
    url = f"sqlite:///{db}"
    by_table = heartbeat(HeartbeatParams(url=url, table="sync_log", column="synced_at"), timeout=5)
    assert by_table.value == pytest.approx(170, abs=3)
    by_query = heartbeat(HeartbeatParams(url=url, query="SELECT min(synced_at) FROM sync_log"), timeout=5)
    assert by_query.value == pytest.approx(900, abs=3)


def test_heartbeat_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="exactly one of 'query' or 'table'"):
        HeartbeatParams(url="sqlite:///x.db")
    with pytest.raises(ValueError, match="identifier"):
        HeartbeatParams(url="sqlite:///x.db", table="t; DROP TABLE t")


# -- command ----------------------------------------------------------------------------


def test_command_prints_a_number() -> None:
    measured = command(CommandParams(command=[sys.executable, "-c", "print('warming up'); print(42.5)"]),
                       timeout=10)
    assert measured.value == 42.5
    shell = command(CommandParams(command="echo 7 | cat", shell=True), timeout=10)
    assert shell.value == 7.0


def test_command_failures_are_errors() -> None:
    with pytest.raises(CheckError, match="printed no number \\(last line: 'hello'\\)"):
        command(CommandParams(command=[sys.executable, "-c", "print('hello')"]), timeout=10)
    with pytest.raises(CheckError, match="command exited 3: boom"):
        command(CommandParams(command=[sys.executable, "-c",
                                       "import sys; print('boom', file=sys.stderr); sys.exit(3)"]), timeout=10)
    with pytest.raises(CheckError, match="cannot run command"):
        command(CommandParams(command="/nonexistent/binary"), timeout=10)


def test_command_timeout_kills_it() -> None:
    started = time.monotonic()
    with pytest.raises(CheckError, match="timed out after 0.5s"):
        command(CommandParams(command=[sys.executable, "-c", "import time; time.sleep(30)"]), timeout=0.5)
    assert time.monotonic() - started < 0.5 * 3 + 5  # killed at the timeout, not after the 30 s sleep


def test_command_no_shell_unless_asked() -> None:
    # without shell, "|" and "echo" are plain arguments: echo prints them literally
    measured = command(CommandParams(command="echo 7"), timeout=10)
    assert measured.value == 7.0
    with pytest.raises(CheckError, match="printed no number"):
        command(CommandParams(command="echo 7 | cat"), timeout=10)
    with pytest.raises(ValueError, match="one string"):
        CommandParams(command=["echo", "1"], shell=True)


# -- run_check: ${VAR} at check time ----------------------------------------------------


def test_run_check_expands_variables_at_check_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _file(tmp_path / "DR1.jpg", 30)
    raw = {"path": "${IMAGES_DIR}", "glob": "DR*.jpg"}
    monkeypatch.delenv("IMAGES_DIR", raising=False)
    with pytest.raises(MissingEnvError, match="IMAGES_DIR is not set \\(in checks.vlm.path\\)"):
        run_check("file_age", raw, timeout=5, key="checks.vlm")
    monkeypatch.setenv("IMAGES_DIR", str(tmp_path))
    assert run_check("file_age", raw, timeout=5, key="checks.vlm").value == pytest.approx(30, abs=3)


def test_redact_url() -> None:
    assert redact_url("postgresql://u:secret@h:5432/db?x=1") == "postgresql://u:***@h:5432/db?x=1"
    assert redact_url("postgresql://u@h/db") == "postgresql://u@h/db"
