"""The monitor: statuses from real sources, storage, timeouts, the gate, retention, watch + /health."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sqlite3
import threading
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import psycopg
import pytest

from fibreflow.errors import ConfigError, SLAViolationError
from fibreflow.sla import checks
from fibreflow.sla.alerts import AlertDispatcher
from fibreflow.sla.checks import Measurement
from fibreflow.sla.config import sla_config_from_dict
from fibreflow.sla.localdata import LocalHTTPSource, touch_image
from fibreflow.sla.monitor import SLAMonitor, SLAWarning, require_fresh_data
from fibreflow.store import Store
from fibreflow.testing.slack_receiver import SlackReceiver

UTC = dt.UTC


@pytest.fixture
def orders(pg_dsn: str, pg_table: str) -> str:
    """A PostgreSQL table whose newest updated_at is 10 s old."""
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"CREATE TABLE {pg_table} (updated_at timestamptz)")
        con.execute(f"INSERT INTO {pg_table} VALUES (now() - interval '10 seconds')")
    return pg_table


def set_age(pg_dsn: str, table: str, seconds: float) -> None:
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"UPDATE {table} SET updated_at = now() - make_interval(secs => %s)", [seconds])


def image_dir(tmp_path: Path, age: float = 5) -> Path:
    d = tmp_path / "images"
    d.mkdir(exist_ok=True)
    touch_image(d, "DR1.jpg", dt.datetime.now(dt.UTC) - dt.timedelta(seconds=age))
    return d


def config_for(pg_dsn: str, table: str, images: Path, **extra: Any) -> Any:
    data: dict[str, Any] = {
        "slas": {"orders_fresh": 300, "images_fresh": 600},
        "checks": {
            "orders_fresh": {"type": "sql_freshness", "url": pg_dsn,
                             "query": f"SELECT max(updated_at) FROM {table}", "warn_after": 120},
            "images_fresh": {"type": "file_age", "path": str(images), "glob": "DR*.jpg"},
        },
    }
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return sla_config_from_dict(data)


def test_status_follows_updated_at_and_every_result_is_stored(
        pg_dsn: str, orders: str, tmp_path: Path, store: Store) -> None:
    monitor = SLAMonitor(config_for(pg_dsn, orders, image_dir(tmp_path)), store=store)
    for age, expected in ((10, "ok"), (200, "warn"), (400, "violation"), (20, "ok")):
        set_age(pg_dsn, orders, age)
        results = monitor.check_all_slas()
        by_name = {r.name: r for r in results}
        assert by_name["orders_fresh"].status == expected, by_name["orders_fresh"]
        assert by_name["orders_fresh"].value == pytest.approx(age, abs=3)
        assert by_name["images_fresh"].status == "ok"
    rows = store.query_df("SELECT cycle_id, name, status, value, threshold, warn_after, check_type, "
                          "checked_at, duration_s FROM sla_checks ORDER BY id")
    assert len(rows) == 8 and rows["cycle_id"].nunique() == 4
    orders_rows = rows[rows["name"] == "orders_fresh"]
    assert list(orders_rows["status"]) == ["ok", "warn", "violation", "ok"]
    assert set(orders_rows["threshold"]) == {300.0} and set(orders_rows["warn_after"]) == {120.0}
    assert set(rows["check_type"]) == {"sql_freshness", "file_age"}
    assert (rows["duration_s"] >= 0).all()


def test_violation_reason(pg_dsn: str, orders: str, tmp_path: Path, store: Store) -> None:
    set_age(pg_dsn, orders, 500)
    result = SLAMonitor(config_for(pg_dsn, orders, image_dir(tmp_path)), store=store).check_all_slas(
        ["orders_fresh"])
    assert [r.name for r in result] == ["orders_fresh"]
    assert result[0].status == "violation" and result[0].reason.startswith("500") \
        and result[0].reason.endswith("above threshold 300")


def test_missing_env_var_fails_only_that_check(tmp_path: Path, store: Store,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ORDERS_DB_URL", raising=False)
    config = sla_config_from_dict({
        "slas": {"orders_fresh": 300, "images_fresh": 600},
        "checks": {"orders_fresh": {"type": "sql_freshness", "url": "${ORDERS_DB_URL}", "query": "SELECT 1"},
                   "images_fresh": {"type": "file_age", "path": str(image_dir(tmp_path))}}})
    results = {r.name: r for r in SLAMonitor(config, store=store).check_all_slas()}
    assert results["orders_fresh"].status == "error"
    assert "ORDERS_DB_URL is not set" in results["orders_fresh"].reason
    assert results["images_fresh"].status == "ok"


def test_unreachable_database_is_an_error_and_the_cycle_goes_on(tmp_path: Path, store: Store) -> None:
    config = sla_config_from_dict({
        "slas": {"orders_fresh": 300, "images_fresh": 600},
        "checks": {"orders_fresh": {"type": "sql_freshness", "url": "postgresql://postgres@127.0.0.1:1/test",
                                    "query": "SELECT now()", "timeout": 3},
                   "images_fresh": {"type": "file_age", "path": str(image_dir(tmp_path))}}})
    results = {r.name: r for r in SLAMonitor(config, store=store).check_all_slas()}
    assert results["orders_fresh"].status == "error" and results["orders_fresh"].value is None
    assert "cannot connect to postgresql://postgres@127.0.0.1:1/test" in results["orders_fresh"].reason
    assert results["images_fresh"].status == "ok"
    stored = store.query_df("SELECT name, status, reason FROM sla_checks ORDER BY name")
    assert list(stored["status"]) == ["ok", "error"]


class SleepParams(checks._Params):
    seconds: float


def sleepy(params: SleepParams, *, timeout: float, now: dt.datetime | None = None) -> Measurement:
    """A check that ignores its timeout, like a driver stuck in a blocking call."""
    time.sleep(params.seconds)
    return Measurement(1.0)


@pytest.fixture
def sleep_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(checks.CHECK_TYPES, "sleep", sleepy)
    monkeypatch.setitem(checks.CHECK_PARAMS, "sleep", SleepParams)


def test_a_hanging_check_costs_the_cycle_only_its_timeout(sleep_check: None, tmp_path: Path,
                                                          store: Store) -> None:
    config = sla_config_from_dict({
        "slas": {"stuck": 10, "quick": 600},
        "checks": {"stuck": {"type": "sleep", "seconds": 4, "timeout": 1},
                   "quick": {"type": "file_age", "path": str(image_dir(tmp_path))}}})
    monitor = SLAMonitor(config, store=store)
    started = time.monotonic()
    results = {r.name: r for r in monitor.check_all_slas()}
    elapsed = time.monotonic() - started
    assert elapsed < 4, elapsed  # the cycle did not wait for the check's 4 s sleep, only its 1 s timeout
    assert results["stuck"].status == "error" and results["stuck"].reason == "timed out after 1s"
    assert results["quick"].status == "ok"
    # the stuck thread is still asleep: the next cycle does not start a second one
    again = {r.name: r for r in monitor.check_all_slas()}
    assert "still running from an earlier cycle" in again["stuck"].reason
    assert again["quick"].status == "ok"


def test_a_hanging_http_source(http: LocalHTTPSource, tmp_path: Path, store: Store) -> None:
    http.route("/health", {"ok": True}, delay=float("inf"))
    config = sla_config_from_dict({
        "slas": {"server": 10, "quick": 600},
        "checks": {"server": {"type": "http_latency", "url": f"{http.url}/health", "timeout": 1},
                   "quick": {"type": "file_age", "path": str(image_dir(tmp_path))}}})
    started = time.monotonic()
    results = {r.name: r for r in SLAMonitor(config, store=store).check_all_slas()}
    assert time.monotonic() - started < 1 * 3 + 5  # the 1 s timeout, not the server's endless delay
    assert results["server"].status == "error" and "timed out" in results["server"].reason
    assert results["quick"].status == "ok"


def test_checks_run_concurrently(sleep_check: None, store: Store) -> None:
    config = sla_config_from_dict({
        "slas": {f"s{i}": 10 for i in range(6)},
        "checks": {f"s{i}": {"type": "sleep", "seconds": 0.4, "timeout": 5} for i in range(6)}})
    started = time.monotonic()
    results = SLAMonitor(config, store=store).check_all_slas()
    assert time.monotonic() - started < 6 * 0.4  # less than the six 0.4 s sleeps one after another
    assert [r.status for r in results] == ["ok"] * 6


def test_http_status_violation(http: LocalHTTPSource, store: Store) -> None:
    http.route("/health", {"ok": False}, status=500)
    config = sla_config_from_dict({"slas": {"server": 10},
                                   "checks": {"server": {"type": "http_latency", "url": f"{http.url}/health"}}})
    [result] = SLAMonitor(config, store=store).check_all_slas()
    assert result.status == "violation" and result.reason == f"HTTP 500 from {http.url}/health"


def test_error_after_overrides_the_threshold_for_violations(tmp_path: Path, store: Store) -> None:
    config = sla_config_from_dict({"slas": {"images_fresh": 60}, "checks": {"images_fresh": {
        "type": "file_age", "path": str(image_dir(tmp_path, age=90)), "warn_after": 30, "error_after": 120}}})
    [result] = SLAMonitor(config, store=store).check_all_slas()
    assert result.status == "warn" and result.error_after == 120 and result.threshold == 60


# -- the gate ---------------------------------------------------------------------------


def test_gate_abort_raises_listing_violations(pg_dsn: str, orders: str, tmp_path: Path, store: Store) -> None:
    config = config_for(pg_dsn, orders, image_dir(tmp_path, age=900))
    set_age(pg_dsn, orders, 400)
    with pytest.raises(SLAViolationError) as info:
        require_fresh_data(policy="abort", config=config, store=store)
    assert {v.name for v in info.value.violations} == {"orders_fresh", "images_fresh"}
    assert "orders_fresh: violation" in str(info.value) and "images_fresh: violation" in str(info.value)
    # only the SLAs asked for
    set_age(pg_dsn, orders, 5)
    results = require_fresh_data(["orders_fresh"], policy="abort", config=config, store=store)
    assert [r.status for r in results] == ["ok"]


def test_gate_warn_warns_and_returns(pg_dsn: str, orders: str, tmp_path: Path, store: Store) -> None:
    config = config_for(pg_dsn, orders, image_dir(tmp_path))
    set_age(pg_dsn, orders, 400)
    with pytest.warns(SLAWarning, match="orders_fresh: violation"):
        results = require_fresh_data(policy="warn", config=config, store=store)
    assert {r.name: r.status for r in results} == {"orders_fresh": "violation", "images_fresh": "ok"}
    set_age(pg_dsn, orders, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        require_fresh_data(policy="warn", config=config, store=store)
    with pytest.raises(ConfigError, match="policy must be 'warn' or 'abort'"):
        require_fresh_data(policy="ignore", config=config, store=store)  # type: ignore[arg-type]


def test_gate_defaults_to_configured_file_and_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    slas = tmp_path / "slas.yaml"
    slas.write_text(f"slas: {{images_fresh: 60}}\nchecks:\n  images_fresh: "
                    f"{{type: file_age, path: '{image_dir(tmp_path, age=300)}'}}\n")
    settings = tmp_path / "fibreflow.yaml"
    settings.write_text(f"sla: {{config_path: '{slas}'}}\n")
    monkeypatch.setenv("FIBREFLOW_CONFIG", str(settings))
    with pytest.raises(SLAViolationError, match="images_fresh"):
        require_fresh_data(policy="abort")
    assert Store(os.environ["FIBREFLOW_DB"]).scalar("SELECT count(*) FROM sla_checks") == 1


# -- retention --------------------------------------------------------------------------


def test_retention_deletes_only_old_rows(tmp_path: Path, store: Store) -> None:
    config = sla_config_from_dict({"slas": {"a": 60}, "checks": {"a": {"type": "file_age", "path": "/x"}},
                                   "monitoring": {"retention_days": 7}})
    now = dt.datetime(2024, 6, 1, tzinfo=UTC)
    store.insert_rows("sla_checks", [{"name": "a", "status": "ok", "checked_at": now - dt.timedelta(days=d)}
                                     for d in (1, 6.9, 7.1, 30)])
    assert SLAMonitor(config, store=store).apply_retention(now=now) == 2
    left = store.query_df("SELECT checked_at FROM sla_checks ORDER BY checked_at")
    assert len(left) == 2 and left["checked_at"].min() > now - dt.timedelta(days=7)


def test_retention_and_interval_out_of_range_in_code_delete_nothing_and_do_not_spin(store: Store) -> None:
    import dataclasses

    config = sla_config_from_dict({"slas": {"a": 60}, "checks": {"a": {"type": "file_age", "path": "/x"}}})
    with pytest.raises(ConfigError, match=r"monitoring: retention_days: .*greater than or equal to 1"):
        sla_config_from_dict({"slas": {"a": 60}, "checks": {"a": {"type": "file_age", "path": "/x"}},
                              "monitoring": {"retention_days": -1}})
    # a copy made in code skips validation: the monitor checks again before it deletes or loops
    bad = dataclasses.replace(config, monitoring=config.monitoring.model_copy(
        update={"retention_days": -1, "check_interval": float("nan")}))
    now = dt.datetime(2024, 6, 1, tzinfo=UTC)
    store.insert_rows("sla_checks", [{"name": "a", "status": "ok", "checked_at": now - dt.timedelta(days=d)}
                                     for d in (1, 30)])
    monitor = SLAMonitor(bad, store=store)
    with pytest.raises(ConfigError, match="retention_days must be 1 to 36500 days, got -1: no rows were deleted"):
        monitor.apply_retention(now=now)
    with pytest.raises(ConfigError, match="interval must be 0 to 86400 seconds, got nan"):
        monitor.watch(cycles=1)
    assert store.scalar("SELECT count(*) FROM sla_checks") == 2


# -- watch and /health ------------------------------------------------------------------


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_watch_serves_health_of_the_last_cycle(pg_dsn: str, orders: str, tmp_path: Path, store: Store) -> None:
    monitor = SLAMonitor(config_for(pg_dsn, orders, image_dir(tmp_path)), store=store)
    stop = threading.Event()
    runner = threading.Thread(target=monitor.watch, args=(0.1,), kwargs={"health_port": 0, "stop_event": stop})
    runner.start()
    try:
        wait_until(lambda: monitor.health is not None and monitor.cycles >= 1)
        assert monitor.health is not None
        base = f"http://127.0.0.1:{monitor.health.address[1]}"
        status, body = get(f"{base}/health")
        assert status == 200 and body["status"] == "ok"
        assert {c["name"] for c in body["checks"]} == {"orders_fresh", "images_fresh"}
        assert set(body["checks"][0]) >= {"name", "status", "value", "threshold", "reason"}
        set_age(pg_dsn, orders, 400)
        cycles = monitor.cycles
        wait_until(lambda: monitor.cycles >= cycles + 2)
        status, body = get(f"{base}/health")
        assert status == 503 and body["status"] == "failing"
        assert {c["name"]: c["status"] for c in body["checks"]}["orders_fresh"] == "violation"
        assert get(f"{base}/nope")[0] == 404
    finally:
        stop.set()
        runner.join(timeout=10)
    assert not runner.is_alive() and monitor.health is None
    with pytest.raises(urllib.error.URLError):
        get(f"{base}/health")  # the port is released when watch returns
    assert store.scalar("SELECT count(DISTINCT cycle_id) FROM sla_checks") == monitor.cycles >= 3


def test_watch_stops_after_cycles_and_health_before_first_cycle(tmp_path: Path, store: Store) -> None:
    config = sla_config_from_dict({"slas": {"a": 600},
                                   "checks": {"a": {"type": "file_age", "path": str(image_dir(tmp_path))}}})
    monitor = SLAMonitor(config, store=store)
    assert monitor.health_document()["status"] == "starting"
    assert monitor.watch(0, cycles=3) == 3
    assert store.scalar("SELECT count(*) FROM sla_checks") == 3


# -- alerts -----------------------------------------------------------------------------


def test_violation_alert_reaches_slack_and_resolves(tmp_path: Path, store: Store) -> None:
    db = tmp_path / "bridge.db"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE sessions (authenticated_at TEXT)")
        con.execute("INSERT INTO sessions VALUES (datetime('now', '-100 seconds'))")
    config = sla_config_from_dict({
        "slas": {"session_age": 60},
        "checks": {"session_age": {"type": "heartbeat", "url": f"sqlite:///{db}", "table": "sessions",
                                   "column": "authenticated_at"}},
        "alerts": [{"condition": "session_age > 60", "message": "session {value}s old (SLA {threshold}s)"}]})
    with SlackReceiver() as slack:
        dispatcher = AlertDispatcher(store, config.alerts, config.monitoring,
                                     environ={"SLACK_WEBHOOK_URL": slack.webhook_url})
        monitor = SLAMonitor(config, store=store, alerts=dispatcher)
        [result] = monitor.check_all_slas()
        assert result.status == "violation"
        [message] = slack.wait_for(1)
        assert re.fullmatch(r"session 10\ds old \(SLA 60s\)", message.text or ""), message.text
        with sqlite3.connect(db) as con:
            con.execute("UPDATE sessions SET authenticated_at = datetime('now')")
        [result] = monitor.check_all_slas()
        assert result.status == "ok"
        assert len(slack.wait_for(2)) == 2
    assert store.scalar("SELECT count(*) FROM alert_outbox WHERE status = 'delivered'") == 2
