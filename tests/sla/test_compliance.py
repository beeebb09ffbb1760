"""Compliance figures and report readers on hand-inserted sla_checks rows in a real DuckDB file."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pandas as pd
import pytest

from fibreflow.errors import ConfigError, StoreError
from fibreflow.sla.compliance import (
    compliance_records,
    compute_compliance,
    status_by_hour,
    values_over_time,
    violations,
)
from fibreflow.sla.report import load_sla_report
from fibreflow.store import Store

NOW = dt.datetime(2025, 3, 31, 12, 0, tzinfo=dt.UTC)


def _row(name: str, status: str, minutes_ago: float, value: float = 10.0, threshold: float = 300.0,
         reason: str | None = None) -> dict:
    return {"name": name, "check_type": "sql_freshness", "value": value, "threshold": threshold,
            "status": status, "reason": reason, "checked_at": NOW - dt.timedelta(minutes=minutes_ago),
            "duration_s": 0.01}


@pytest.fixture
def filled(store: Store) -> Store:
    rows = []
    # "alpha": 20 checks in the window: 17 ok, 1 warn, 1 violation, 1 error
    statuses = ["ok"] * 17 + ["warn", "violation", "error"]
    rows += [_row("alpha", s, minutes_ago=i + 1) for i, s in enumerate(statuses)]
    # "beta": 40 checks, one violation
    rows += [_row("beta", "violation" if i == 5 else "ok", minutes_ago=i + 1) for i in range(40)]
    # outside the 30-day window (too old, and in the future): ignored
    rows += [_row("alpha", "violation", minutes_ago=31 * 24 * 60), _row("beta", "violation", minutes_ago=-5)]
    store.insert_rows("sla_checks", rows)
    return store


def test_compliance_shares_budget_and_burn(filled: Store) -> None:
    df = compute_compliance(filled, days=30, target=0.95, now=NOW).set_index("name")
    a, b = df.loc["alpha"], df.loc["beta"]
    # alpha: warn meets the SLA, violation and error do not -> 18 of 20
    assert (a.checks, a.ok_checks, a.warn_checks, a.violation_checks, a.error_checks) == (20, 18, 1, 1, 1)
    assert a.compliance == pytest.approx(0.90)
    assert not a.met
    # allowed failures 5% of 20 = 1, used 2 -> burn 2.0, budget overspent by one budget
    assert a.burn_rate == pytest.approx(2.0)
    assert a.error_budget_left == pytest.approx(-1.0)
    # beta: 39 of 40; allowed 2, used 1
    assert (b.checks, b.ok_checks) == (40, 39)
    assert b.compliance == pytest.approx(0.975)
    assert b.met
    assert b.burn_rate == pytest.approx(0.5)
    assert b.error_budget_left == pytest.approx(0.5)
    assert list(df["target"]) == [0.95, 0.95]


def test_window_and_names(filled: Store) -> None:
    # a window of 10.5 minutes holds beta's 10 newest checks (one violation); its start is open
    df = compute_compliance(filled, days=10.5 / 1440, now=NOW, names=["beta", "gamma"]).set_index("name")
    assert list(df.index) == ["beta", "gamma"]
    assert df.loc["beta", "checks"] == 10 and df.loc["beta", "compliance"] == pytest.approx(0.9)
    gamma = df.loc["gamma"]
    assert gamma.checks == 0 and math.isnan(gamma.compliance) and not gamma.met
    records = compliance_records(df.reset_index())
    assert records[1]["compliance"] is None and records[1]["met"] is False
    assert isinstance(records[0]["checks"], int)


@pytest.mark.parametrize("target", [0, 1, 1.5])
def test_target_out_of_range(store: Store, target: float) -> None:
    with pytest.raises(ConfigError, match="compliance target"):
        compute_compliance(store, target=target)


def test_status_by_hour_worst_and_share(store: Store) -> None:
    hour = NOW.replace(minute=0) - dt.timedelta(hours=1)
    at = [hour + dt.timedelta(minutes=m) for m in (1, 2, 3, 4)]
    store.insert_rows("sla_checks", [
        {"name": "a", "status": s, "checked_at": t, "value": 1.0, "threshold": 2.0}
        for s, t in zip(["ok", "warn", "error", "ok"], at, strict=True)
    ] + [{"name": "b", "status": "ok", "checked_at": at[0], "value": 1.0, "threshold": 2.0}])
    df = status_by_hour(store, days=1, now=NOW)
    a = df[df["name"] == "a"].iloc[0]
    assert a.hour == hour and a.checks == 4
    assert a.worst_status == "error" and a.ok_share == pytest.approx(0.75)
    assert df[df["name"] == "b"].iloc[0].worst_status == "ok"


def test_values_over_time_keeps_peaks(store: Store) -> None:
    rows = [_row("a", "ok", minutes_ago=m, value=10.0) for m in range(1, 600)]
    rows[100] = _row("a", "violation", minutes_ago=101, value=999.0)
    store.insert_rows("sla_checks", rows)
    df = values_over_time(store, days=1, now=NOW, max_points=50)
    assert len(df) <= 51
    assert df["value"].max() == 999.0
    assert df["checks"].sum() == 599
    assert set(df["threshold"]) == {300.0}


def test_violation_episodes(store: Store) -> None:
    seq = ["ok", "violation", "violation", "ok", "error", "violation"]
    store.insert_rows("sla_checks", [
        _row("a", s, minutes_ago=len(seq) - i, value=100.0 * (i + 1), reason="down" if s == "error" else None)
        for i, s in enumerate(seq)])
    df = violations(store, days=1, now=NOW)
    assert list(df["status"]) == ["violation", "error", "violation"]  # newest first
    assert list(df["checks"]) == [1, 1, 2]
    assert list(df["ongoing"]) == [True, False, False]
    assert df.iloc[2]["worst_value"] == 300.0 and df.iloc[1]["reason"] == "down"


def test_compliance_over_a_month_of_checks(store: Store) -> None:
    # 12 SLAs x 1 check/min x 30 days, inserted by SQL to keep the test quick; its speed is
    # `fibreflow bench sla` (compliance_query_ms), not a test's
    store.execute(
        "INSERT INTO sla_checks (name, value, threshold, status, checked_at) "
        "SELECT 'sla_' || (i % 12), 1.0, 2.0, CASE WHEN i % 50 = 0 THEN 'violation' ELSE 'ok' END, "
        "?::TIMESTAMPTZ - to_minutes((i // 12)::BIGINT) FROM range(518400) t(i)", [NOW])
    df = compute_compliance(store, days=30, now=NOW)
    assert df["checks"].sum() == 518400


def test_load_sla_report_uses_config(filled: Store, tmp_path: Path) -> None:
    cfg = tmp_path / "slas.yaml"
    cfg.write_text("slas:\n  alpha: 300\n  gamma: 60\n"
                   "checks:\n  alpha: {type: file_age, path: /tmp}\n  gamma: {type: file_age, path: /tmp}\n"
                   "monitoring:\n  compliance_target: 0.8\n")
    report = load_sla_report(days=30, db_path=filled.path, config_path=cfg, now=NOW)
    assert list(report.compliance["name"]) == ["alpha", "gamma"]
    assert report.target == 0.8 and bool(report.compliance.set_index("name").loc["alpha", "met"])
    text = report.summary()
    assert "1 of 2 SLAs met the target" in text and "`gamma`: no checks" in text


def test_load_sla_report_refuses_missing_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="no fibreflow store"):
        load_sla_report(db_path=tmp_path / "absent.duckdb")


def test_cli_without_config_reports_the_slas_checked_and_fails_on_a_miss(
        store: Store, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from fibreflow.cli import main
    from fibreflow.config import load_settings
    from fibreflow.sla.config import load_sla_config

    now = dt.datetime.now(dt.UTC)
    rows = [{"name": name, "status": "ok", "value": 1.0, "threshold": 60.0, "checked_at": now - dt.timedelta(minutes=i)}
            for i in range(1, 21) for name in ("orders_fresh", "images_fresh")]
    store.insert_rows("sla_checks", rows)
    monkeypatch.setenv("FIBREFLOW_DB", str(store.path))
    example = set(load_sla_config(load_settings().sla.config_path).slas)
    assert not example & {"orders_fresh", "images_fresh"}  # the example file names other SLAs
    assert main(["sla", "compliance", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in doc["slas"]} == {"orders_fresh", "images_fresh"} and doc["source"].endswith("(store)")
    store.insert_rows("sla_checks", [{"name": "images_fresh", "status": "violation", "value": 900.0, "threshold": 60.0,
                                      "checked_at": now - dt.timedelta(seconds=30 + i)} for i in range(20)])
    assert main(["sla", "compliance"]) == 1
    out = capsys.readouterr().out
    assert "images_fresh" in out and "MISSED" in out and "overspent 10.0x" in out and "50%" in out


def test_values_over_time_buckets_hold_still_while_now_moves(store: Store) -> None:
    """Buckets are whole multiples of their length since the epoch: a live view redraws when a
    check arrives or a bucket fills, not every time the clock moves."""
    store.insert_rows("sla_checks", [_row("a", "ok", minutes_ago=m, value=float(m)) for m in range(1, 600, 7)])
    first = values_over_time(store, days=1, now=NOW, max_points=50)
    bucket_s = (first["checked_at"].iloc[1] - first["checked_at"].iloc[0]).total_seconds()
    assert all(ts.timestamp() % bucket_s == 0 for ts in first["checked_at"])
    later = values_over_time(store, days=1, now=NOW + dt.timedelta(seconds=20), max_points=50)
    pd.testing.assert_frame_equal(first, later)
    assert len(first) <= 50
