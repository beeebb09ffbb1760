"""The budget guard: daily and monthly limits over recorded model and sandbox spend, alerts at 80%
and 100% through the SLA alert path (the real slack_sdk against the local Slack), and a build that
stops starting attempts when the next would cross the limit."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from repo_support import make_repo

from fibreflow.build.budget import Budget
from fibreflow.build.records import insert_attempts
from fibreflow.cli import main
from fibreflow.config import BudgetSettings
from fibreflow.models.client import insert_calls
from fibreflow.store import Store
from fibreflow.testing.slack_receiver import SlackReceiver

NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)


def _spend(store: Store, dollars: float, *, at: dt.datetime, tag: str) -> None:
    insert_calls(store, [{"call_id": f"spend-{tag}", "model": "claude-sonnet-5-5", "tier": "sonnet", "try_no": 1,
                          "cost_usd": dollars, "status": "ok", "created_at": at}])


def _history(store: Store, cost: float) -> None:
    """Earlier attempts on sonnet, each costing ``cost``: what the next one is expected to cost."""
    insert_attempts(store, [{"attempt_id": f"old-{i}", "run_id": "old", "feature_id": "f", "tier": "sonnet",
                             "status": "failed", "cost_usd": cost, "started_at": NOW - dt.timedelta(days=40)}
                            for i in range(2)])


def test_spend_counts_the_current_day_and_month_only(store: Store) -> None:
    _spend(store, 0.5, at=NOW - dt.timedelta(hours=2), tag="today")
    _spend(store, 2.0, at=NOW - dt.timedelta(days=3), tag="this-month")
    _spend(store, 9.0, at=NOW - dt.timedelta(days=10, hours=1) - dt.timedelta(days=30), tag="last-month")
    budget = Budget(store, BudgetSettings(daily_usd=2.0, monthly_usd=3.0), now=lambda: NOW)
    assert budget.spent() == pytest.approx({"daily": 0.5, "monthly": 2.5})
    _history(store, 0.2)
    assert budget.estimate("sonnet") == pytest.approx(0.2) and budget.estimate("opus") == pytest.approx(0.2)
    assert budget.allow("sonnet", running=0) is None  # 2.5 + 0.2 fits the month, 0.5 + 0.2 the day
    reason = budget.allow("sonnet", running=2)  # 2.5 + 3 x 0.2 > 3.0
    assert reason is not None and "monthly spend $2.5000" in reason and "budget.monthly_usd" in reason
    alerts = budget.check_alerts()
    assert alerts == []  # 80% of the month was raised once already, by allow()


@pytest.mark.slow
def test_a_build_stops_at_the_limit_says_so_and_alerts_once(store: Store, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    repo = make_repo(tmp_path / "repo", {"test_ok.py": "def test_ok():\n    assert True\n",
                                         ".gitignore": "__pycache__/\n.pytest_cache/\n.coverage*\n"})
    now = dt.datetime.now(dt.UTC)
    _spend(store, 0.85, at=now, tag="a")
    _history(store, 0.10)
    config = tmp_path / "fibreflow.yaml"
    config.write_text(json.dumps({"budget": {"daily_usd": 1.0}}))
    monkeypatch.setenv("FIBREFLOW_CONFIG", str(config))
    features = tmp_path / "features.json"
    features.write_text(json.dumps([{"id": "one", "description": "write a report"},
                                    {"id": "two", "description": "write another report"}]))
    with SlackReceiver() as slack:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
        cmd = ["build", str(features), "--repo", str(repo), "--profile", "quick", "--agent-command", "true",
               "--attempts", "3", "--test-command", "python -m pytest -q test_ok.py", "--no-progress"]
        code = main(cmd)
        out = capsys.readouterr().out
        assert code == 1
        # 0.85 spent: the first attempt (about $0.10) fits under $1.00, a second one under way would not
        assert "stopped starting attempts: budget: daily spend $0.8500" in out and "budget.daily_usd" in out
        rows = store.query_df("SELECT feature_id, status, reason FROM features ORDER BY feature_id").to_dict("records")
        assert [(r["feature_id"], r["status"]) for r in rows] == [("one", "passed"), ("two", "blocked")]
        assert rows[1]["reason"].startswith("budget: daily spend")
        assert store.scalar("SELECT count(*) FROM attempts WHERE run_id <> 'old'") == 1
        assert "budget" in store.scalar("SELECT error FROM runs")
        sent = slack.wait_for(1)
        assert "passed 80% of the $1.00 limit (budget.daily_usd)" in sent[0].text

        assert main(cmd) == 1  # the same day: the 80% alert is not sent again
        capsys.readouterr()
        _spend(store, 0.2, at=now, tag="b")
        assert main(cmd) == 1
        out = capsys.readouterr().out
        assert "daily spend $1.0500" in out  # nothing started at all
        sent = slack.wait_for(2)
        assert len(sent) == 2 and "reached the $1.00 limit" in sent[1].text
    assert store.scalar("SELECT count(*) FROM alert_outbox WHERE dedupe_key LIKE 'budget|daily|%'") == 2
