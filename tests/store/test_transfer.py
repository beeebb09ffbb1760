"""``fibreflow store migrate --to URL`` and ``store compact``: every table copied between modes
(file -> lake -> file) with the counts on both sides, a non-empty or unreachable target refused
with the store left as it was, and compaction only where there is a lake."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pytest
from lake_support import Lake
from store_support import store_unchanged

from fibreflow.cli import main
from fibreflow.config import Settings
from fibreflow.store import Store
from fibreflow.store.schema import TABLE_OWNERS
from fibreflow.store.transfer import TargetNotEmpty, copy_store
from fibreflow.twin.sample_data import fill_sample_history

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Store:
    """The configured store: a file with two days of history and an alert in every alert table."""
    from fibreflow.sla.alerts import AlertDispatcher
    from fibreflow.sla.model import AlertRule, CheckResult, MonitoringSettings

    path = tmp_path / "source.duckdb"
    monkeypatch.setenv("FIBREFLOW_DB", str(path))
    store = Store(path, lock_timeout_s=30)
    store.migrate()
    fill_sample_history(store, days=2, seed=7, now=NOW, sla_interval_min=60)
    AlertDispatcher(store, [AlertRule(condition="lag > 300")], MonitoringSettings(), Settings()).evaluate(
        [CheckResult(name="lag", status="violation", value=400.0, threshold=300, checked_at=NOW, duration_s=0.1)],
        now=NOW)
    return store


def _dump(store: Store, table: str) -> pd.DataFrame:
    df = store.query_df(f"SELECT * FROM {table}")
    return df.sort_values(list(df.columns)[:3]).reset_index(drop=True)


def test_every_table_goes_file_to_lake_to_file_unchanged(source: Store, lake: Lake, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["store", "migrate", "--to", lake.url, "--data-path", str(lake.data_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["equal"] is True, out
    assert set(out["tables"]) == set(TABLE_OWNERS)
    assert out["tables"]["sla_checks"]["source"] == out["tables"]["sla_checks"]["target"] > 0
    assert out["tables"]["alert_outbox"]["target"] == 1 and out["target"] == lake.url

    lake_store = Store.from_url(lake.url, settings=_settings(lake))
    back = Store(tmp_path / "back.duckdb", lock_timeout_s=30)
    report = copy_store(lake_store, back)
    assert report.equal and report.copied == sum(n for t, n in report.source_rows.items() if t != "schema_version")
    for table in TABLE_OWNERS:
        if table != "schema_version":
            pd.testing.assert_frame_equal(_dump(source, table), _dump(back, table), check_dtype=False)
    lake_store.close()


def _settings(lake: Lake) -> Settings:
    return Settings.model_validate({"store": {"url": lake.url, "data_path": str(lake.data_path)}})


def test_a_target_with_rows_is_refused_unless_replace(source: Store, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "target.duckdb"
    assert main(["store", "migrate", "--to", f"duckdb://{target}"]) == 0
    printed = capsys.readouterr().out
    assert "sla_checks" in printed and "equal" in printed
    with store_unchanged(target, check_bytes=False):
        assert main(["store", "migrate", "--to", f"duckdb://{target}"]) == 2
        err = capsys.readouterr().err
        assert str(target) in err and "--replace" in err and "already holds rows" in err
    source.insert_rows("runs", [{"run_id": "late", "status": "passed", "started_at": NOW}])
    assert main(["store", "migrate", "--to", f"duckdb://{target}", "--replace", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tables"]["runs"]["target"] == out["tables"]["runs"]["source"] == int(source.scalar(
        "SELECT count(*) FROM runs"))
    with pytest.raises(TargetNotEmpty, match="source store itself"):
        copy_store(source, Store(source.path))


def test_a_catalog_that_refuses_is_exit_2_naming_it_without_the_password(
        source: Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = "ducklake:postgres:dbname=ff_lake_missing host=127.0.0.1 port=5432 user=postgres password=hunter2-pw"
    with store_unchanged(source.path, check_bytes=False):
        code = main(["store", "migrate", "--to", bad, "--data-path", str(tmp_path / "data")])
    err = capsys.readouterr().err
    assert code == 2
    assert "ducklake:postgres:dbname=ff_lake_missing" in err and "hunter2-pw" not in err
    assert "does not exist" in err
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").rglob("*.parquet"))


def test_compact_is_for_a_lake_only(source: Store, lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["store", "compact"]) == 2
    err = capsys.readouterr().err
    assert "only a DuckLake store" in err and "duckdb" in err

    store = lake.store(tmp_path, monkeypatch, extra="  lake_inline_rows: 0\n")
    for i in range(5):
        store.insert_rows("runs", [{"run_id": f"r{i}", "status": "passed", "started_at": NOW}])
    assert len(lake.parquet_files("runs")) == 5
    assert main(["store", "compact", "--retention", "0", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files_before"] >= 5 and report["files_after"] < report["files_before"]
    assert len(lake.parquet_files("runs")) == 1
    assert store.scalar("SELECT count(*) FROM runs") == 5
