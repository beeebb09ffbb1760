"""The whole project on a DuckLake store: migrations without constraints, every owner's writes
(builds, SLA checks and alerts, model calls, learning, the autopilot) and the main read paths
(the twin's panels, SLA compliance, costs, learning) give what the embedded file gives."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from lake_support import Lake
from repo_support import make_repo

from fibreflow.agents.command import CommandAgent
from fibreflow.autopilot.state import RunLog
from fibreflow.build.features import FeatureList
from fibreflow.build.runner import ParallelRunner
from fibreflow.config import Settings
from fibreflow.errors import ConfigError
from fibreflow.learning.knowledge import FailureKnowledgeBase
from fibreflow.learning.report import load_learning_data
from fibreflow.sla.alerts import AlertDispatcher
from fibreflow.sla.compliance import compute_compliance, violations
from fibreflow.sla.model import AlertRule, CheckResult, MonitoringSettings
from fibreflow.store import Store
from fibreflow.store.schema import LATEST_VERSION, TABLE_OWNERS
from fibreflow.twin.app import TwinApp
from fibreflow.twin.base import store_token
from fibreflow.twin.sample_data import fill_sample_history

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)


def _result(value: float, when: dt.datetime) -> CheckResult:
    return CheckResult(name="lag", status="violation" if value > 300 else "ok", value=value, threshold=300,
                       checked_at=when, duration_s=0.01, reason=None)


def test_sample_history_reads_the_same_on_a_lake_as_in_a_file(lake: Lake, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    file_store = Store(tmp_path / "file.duckdb", lock_timeout_s=30)
    file_store.migrate()
    lake_store = lake.store(tmp_path, monkeypatch)
    assert lake_store.schema_version() == LATEST_VERSION
    with lake_store.connect() as con:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_catalog = current_database()").fetchall()}
    assert tables == set(TABLE_OWNERS)

    written = {name: fill_sample_history(s, days=2, seed=5, now=NOW, sla_interval_min=30)
               for name, s in (("file", file_store), ("lake", lake_store))}
    assert written["lake"] == written["file"] and written["lake"]["sla_checks"] > 0

    def same(query: str) -> None:
        a, b = file_store.query_df(query), lake_store.query_df(query)
        pd.testing.assert_frame_equal(a, b, check_dtype=False)

    same("SELECT status, count(*) AS n, round(sum(value), 3) AS v FROM sla_checks GROUP BY 1 ORDER BY 1")
    same("SELECT tier, count(*) AS n, round(sum(cost_usd), 6) AS c FROM llm_calls GROUP BY 1 ORDER BY 1")
    same("SELECT status, count(*) AS n FROM attempts GROUP BY 1 ORDER BY 1")
    pd.testing.assert_frame_equal(compute_compliance(file_store, days=3, now=NOW),
                                  compute_compliance(lake_store, days=3, now=NOW), check_dtype=False)
    assert len(violations(lake_store, days=3, now=NOW)) == len(violations(file_store, days=3, now=NOW))
    learning = load_learning_data(lake_store, start=NOW - dt.timedelta(days=3), end=NOW)
    assert {k: len(v) for k, v in learning.items() if isinstance(v, pd.DataFrame)} == \
        {k: len(v) for k, v in load_learning_data(file_store, start=NOW - dt.timedelta(days=3), end=NOW).items()
         if isinstance(v, pd.DataFrame)}

    token = store_token(lake_store)
    assert token["sla_checks"][0] == written["lake"]["sla_checks"]
    app = TwinApp(lake_store, start=False)
    for panel in app.panels:
        assert panel.error == "", f"{panel.title}: {panel.error}"
        assert panel.figures, panel.title


@pytest.mark.slow  # a real build in real sandboxes
def test_every_owner_writes_its_table_on_a_lake(lake: Lake, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    store = lake.store(tmp_path, monkeypatch)

    # alerts: one alert_state row per rule however often it changes (no primary key to replace on)
    dispatcher = AlertDispatcher(store, [AlertRule(condition="lag > 300")], MonitoringSettings(cooldown=60),
                                 Settings())
    t0 = NOW
    assert len(dispatcher.evaluate([_result(400, t0)], now=t0)) == 1
    assert dispatcher.evaluate([_result(400, t0)], now=t0) == []  # the same cycle twice: queued once
    assert len(dispatcher.evaluate([_result(20, t0 + dt.timedelta(seconds=90))],
                                   now=t0 + dt.timedelta(seconds=90))) == 1
    states = store.query_df("SELECT rule_key, active, last_value FROM alert_state")
    assert len(states) == 1 and not states.active[0] and states.last_value[0] == 20
    outbox = store.query_df("SELECT id, kind, status FROM alert_outbox ORDER BY id")
    assert list(outbox.kind) == ["violation", "resolved"] and outbox.id.is_unique and outbox.id.notna().all()
    claimed = dispatcher.outbox.claim_due(t0 + dt.timedelta(seconds=100))
    assert sorted(i.id for i in claimed) == sorted(outbox.id)
    dispatcher.outbox.mark_delivered(claimed[0], t0 + dt.timedelta(seconds=101))
    assert dispatcher.outbox.counts() == {"delivered": 1, "sending": 1}

    # a build: runs, features, attempts and sandbox sessions, inserted then updated
    repo = make_repo(tmp_path / "repo", {"calc.py": "def add(a, b):\n    return 0\n",
                                         "test_calc.py": "from calc import add\n\n\ndef test_add():\n"
                                                         "    assert add(2, 3) == 5\n"})
    agent = CommandAgent("if [ $((FIBREFLOW_ATTEMPT % 2)) -eq 0 ]; then "
                         "printf 'def add(a, b):\\n    return a + b\\n' > calc.py; fi")
    result = ParallelRunner(store, repo, agent=agent, attempts=2, workers=2, profile="python-tests").run(
        FeatureList.from_data([{"id": "add", "description": "add() adds",
                                "test_command": "python -m pytest -q test_calc.py"}]))
    assert result.ok
    run = store.query_df("SELECT status, ended_at FROM runs WHERE run_id = ?", [result.run_id])
    assert list(run.status) == ["passed"] and run.ended_at.notna().all()
    assert store.scalar("SELECT status FROM features WHERE run_id = ?", [result.run_id]) == "passed"
    assert store.scalar("SELECT count(*) FROM attempts WHERE run_id = ?", [result.run_id]) == 2
    assert store.scalar("SELECT count(*) FROM sandbox_sessions WHERE run_id = ?", [result.run_id]) == 2

    # learning: the failed attempt's pattern, stored twice, is one row seen twice
    loser = next(a for a in result.features[0].attempts if not a.passed)
    kb = FailureKnowledgeBase(store)
    pid = kb.store_failure(loser)
    assert pid is not None and kb.store_failure(loser) == pid
    assert store.query_df("SELECT pattern_id, count FROM learned_patterns").to_dict("records") == \
        [{"pattern_id": pid, "count": 2}]
    assert store.scalar("SELECT count(*) FROM pattern_events WHERE pattern_id = ?", [pid]) == 2

    # the autopilot: one row per run id, a second create is refused
    RunLog.create(store, "ap-1", goal="g", repo=str(repo), base_commit="abc")
    with pytest.raises(ConfigError, match="exists already"):
        RunLog.create(store, "ap-1", goal="g", repo=str(repo), base_commit="abc")
    assert store.scalar("SELECT count(*) FROM autopilot_runs") == 1


def test_the_sla_watcher_compacts_a_lake_on_its_schedule(lake: Lake, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from fibreflow.config import load_settings
    from fibreflow.sla.config import sla_config_from_dict
    from fibreflow.sla.monitor import SLAMonitor, insert_checks

    # no inlining: every insert is a Parquet file, as a busy lake's would be after a while
    store = lake.store(tmp_path, monkeypatch, extra="  lake_inline_rows: 0\n  compact_every_s: 0.01\n"
                                                    "  snapshot_retention_s: 0\n")
    for i in range(6):
        insert_checks(store, [{"name": "old", "status": "ok", "value": float(i),
                              "checked_at": dt.datetime.now(dt.UTC)}])
    assert len(lake.parquet_files("sla_checks")) == 6
    images = tmp_path / "images"
    images.mkdir()
    (images / "DR1.jpg").write_bytes(b"jpg")
    config = sla_config_from_dict({"slas": {"images_fresh": 600},
                                   "checks": {"images_fresh": {"type": "file_age", "path": str(images)}}})
    monitor = SLAMonitor(config, store=store, compact_every_s=load_settings().store.compact_every_s)
    assert monitor.watch(0.05, cycles=3) == 3
    # 6 + 3 files without compaction; merged at least once on the way
    assert len(lake.parquet_files("sla_checks")) <= 3
    assert store.scalar("SELECT count(*) FROM sla_checks") == 9
    # a file store is never compacted, and says so when asked
    file_store = Store(tmp_path / "file.duckdb")
    assert SLAMonitor(config, store=file_store, compact_every_s=0.01).compact_every_s == 0
