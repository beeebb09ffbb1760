"""The cost report: its DataFrames on hand-inserted rows (exact dollars), and one real papermill run."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from fibreflow.costs import views as cost_views
from fibreflow.costs.report import load_cost_report
from fibreflow.errors import StoreError
from fibreflow.store import Store

NOW = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
_USAGE = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def _at(day: int, hour: int = 9, minute: int = 0, month: int = 11) -> dt.datetime:
    return dt.datetime(2026, month, day, hour, minute, tzinfo=dt.UTC)


def _call(at: dt.datetime, agent: str | None, tier: str | None, model: str, usage: tuple[int, int, int, int],
          cost: float, status: str = "ok") -> dict[str, object]:
    return {"call_id": f"c-{at:%d%H%M}-{status}", "agent": agent, "tier": tier, "model": model, "status": status,
            "created_at": at, "cost_usd": cost, "try_no": 1, **dict(zip(_USAGE, usage, strict=True))}


def _fill(store: Store) -> None:
    # prices from data/pricing.yaml ($/MTok): haiku-5-5 0.10 in, 0.50 out, 0.01 read; sonnet-5-5 2/10/0.10;
    # opus-5-5 4/20/0.20; claude-3-5-haiku 0.80 in
    store.insert_rows("llm_calls", [
        _call(_at(18, 9), "claude", "haiku", "claude-haiku-5-5", (100_000, 0, 0, 0), 0.01),  # sonnet: 0.20
        _call(_at(18, 10), "claude", "sonnet", "claude-sonnet-5-5", (100_000, 10_000, 0, 0), 0.30),  # 0.30
        _call(_at(19, 8), "vps-monitor", "opus", "claude-opus-5-5", (0, 10_000, 0, 100_000), 0.22),  # 0.11
        _call(_at(19, 8), "vps-monitor", "opus", "claude-opus-5-5", (0, 0, 0, 0), 0.0, status="overloaded"),
        _call(_at(1, month=10), "claude", "sonnet", "claude-sonnet-5-5", (1_000_000, 0, 0, 0), 2.0),  # too old
        _call(_at(10, 0, 30), None, None, "claude-3-5-haiku-20241022", (10_000, 0, 0, 0), 0.008),  # sonnet: 0.02
    ])
    store.insert_rows("sandbox_sessions", [
        {"session_id": "s1", "backend": "e2b", "started_at": _at(18, 9), "cpu_s": 100.0, "est_cost_usd": 0.05},
        {"session_id": "s2", "backend": "local", "started_at": _at(19, 9), "cpu_s": 5.0, "est_cost_usd": None},
        {"session_id": "s3", "backend": "e2b", "started_at": _at(1, month=9), "cpu_s": 9.0, "est_cost_usd": 9.0},
    ])


def _records(df: pd.DataFrame, columns: list[str]) -> list[tuple[object, ...]]:
    return [tuple(round(v, 9) if isinstance(v, float) else v for v in row) for row in df[columns].itertuples(index=False)]


def test_report_frames_from_the_store(store: Store) -> None:
    _fill(store)
    report = load_cost_report(days=30, db_path=store.path, now=NOW)
    assert len(report.calls) == 4  # the failed try and the call before the window are out
    assert report.model_cost == pytest.approx(0.538) and report.sandbox_cost == pytest.approx(0.05)
    # the actual tier of each call; the 3.5 Haiku row without a tier goes by its family name
    assert _records(report.by_tier, ["tier", "calls", "tokens", "cost_usd", "all_sonnet_cost_usd",
                                     "savings_vs_sonnet_usd"]) == [
        ("haiku", 2, 110_000, 0.018, 0.22, 0.202),
        ("sonnet", 1, 110_000, 0.30, 0.30, 0.0),
        ("opus", 1, 110_000, 0.22, 0.11, -0.11),
    ]
    assert report.by_tier["share"].sum() == pytest.approx(1.0)
    assert _records(report.by_agent, ["agent", "calls", "cost_usd", "all_sonnet_cost_usd"]) == [
        ("claude", 2, 0.31, 0.50), ("vps-monitor", 1, 0.22, 0.11), ("(none)", 1, 0.008, 0.02)]
    # days: the whole window, every UTC day, sandboxes beside models
    daily = report.daily.set_index("period")
    assert len(daily) == 31 and daily.index[0] == pd.Timestamp("2026-10-21") and daily.index[-1] == pd.Timestamp(NOW.date())
    assert _records(daily.loc[["2026-11-10", "2026-11-18", "2026-11-19"]].reset_index(),
                    ["model_cost_usd", "sandbox_cost_usd", "total_cost_usd", "calls"]) == [
        (0.008, 0.0, 0.008, 1), (0.31, 0.05, 0.36, 2), (0.22, 0.0, 0.22, 1)]
    assert daily["total_cost_usd"].sum() == pytest.approx(0.588)
    # weeks start on Monday: 2026-11-16 holds the 18th and 19th, 2026-11-09 the 10th
    weekly = report.weekly.set_index("period")
    assert list(weekly.index) == list(pd.date_range("2026-10-19", "2026-11-16", freq="7D"))
    assert _records(weekly.loc[["2026-11-09", "2026-11-16"]].reset_index(),
                    ["model_cost_usd", "sandbox_cost_usd", "calls"]) == [(0.008, 0.0, 1), (0.53, 0.05, 3)]
    # projection at the rate since the first record of the window (2026-11-10 00:30)
    span = 10 + 11.5 / 24
    proj = report.projection.set_index("kind")
    assert proj.loc["total", "span_days"] == pytest.approx(span)
    assert proj.loc["total", "monthly_projection"] == pytest.approx(0.588 / span * 30)
    assert proj.loc["sandbox", "monthly_projection"] == pytest.approx(0.05 / span * 30)
    assert _records(report.by_backend, ["backend", "sessions", "cpu_s", "est_cost_usd"]) == [
        ("e2b", 1, 100.0, 0.05), ("local", 1, 5.0, 0.0)]
    # savings: analyze_costs's figures; vps-monitor routes to haiku by its agent rule
    # (10k out x $0.50 + 100k read x $0.01 = $0.006), calls without text or rule keep their cost
    savings = report.savings.set_index("scenario")["cost_usd"]
    assert savings.round(9).to_dict() == {"all on Sonnet (baseline)": 0.63, "as run": 0.538,
                                          "as the router would route": 0.324}
    assert report.analysis.current_cost == pytest.approx(report.model_cost)
    assert report.analysis.all_sonnet_cost == pytest.approx(report.calls["all_sonnet_cost_usd"].sum())
    summary = report.summary()
    # for people: dollars with cents ($0.538 -> $0.54)
    assert "models $0.54 (4 calls), sandboxes $0.05 (2 sessions)" in summary
    assert "tiered routing saved $0.09 (15% of the baseline)" in summary


def test_logs_join_the_store_and_bad_lines_are_counted(store: Store, tmp_path: Path) -> None:
    _fill(store)
    log = tmp_path / "agent-commands.jsonl"
    log.write_text(json.dumps({"timestamp": "2026-11-20T08:00:00Z", "agent": "cron", "model": "claude-haiku-4-5",
                               "input_tokens": 1000, "output_tokens": 100}) + "\n{not json\n")
    report = load_cost_report(days=30, db_path=store.path, logs=str(log), now=NOW)
    cron = report.by_agent.set_index("agent").loc["cron"]
    assert (cron["calls"], round(cron["cost_usd"], 9)) == (1, 0.0015)  # 1000 x $1 + 100 x $5 per MTok
    assert report.by_tier.set_index("tier").loc["haiku", "calls"] == 3
    assert report.model_cost == pytest.approx(0.5395)
    assert [(m["line"], m["file"]) for m in report.analysis.malformed_lines] == [(2, str(log))]
    # logs alone, without a store
    alone = load_cost_report(days=30, db_path=tmp_path / "none.duckdb", logs=[log], now=NOW)
    assert alone.db_path is None and len(alone.calls) == 1 and alone.sandboxes.empty
    with pytest.raises(StoreError, match="no fibreflow store here"):
        load_cost_report(db_path=tmp_path / "none.duckdb")


def test_an_empty_window_says_so_and_draws_placeholders(store: Store) -> None:
    _fill(store)
    report = load_cost_report(days=1, db_path=store.path, now=_at(1, month=12))
    assert report.calls.empty and report.by_tier.empty and report.sandboxes.empty
    assert "No model calls or sandbox sessions" in report.summary()
    assert list(report.daily["total_cost_usd"]) == [0.0, 0.0]
    for fig in (cost_views.tier_figure(report.by_tier), cost_views.agent_figure(report.by_agent),
                cost_views.timeline_figure(report.daily, report.projection),
                cost_views.spend_split_figure(report.model_cost, report.by_backend),
                cost_views.savings_figure(report.savings)):
        assert not fig.data and fig.layout.annotations


def test_figures_show_the_report_numbers(store: Store) -> None:
    _fill(store)
    report = load_cost_report(days=30, db_path=store.path, now=NOW)
    tier = cost_views.tier_figure(report.by_tier)
    assert list(tier.data[0].x) == ["haiku", "sonnet", "opus"]
    assert [round(v, 9) for v in tier.data[1].y] == [0.22, 0.30, 0.11]
    daily = cost_views.timeline_figure(report.daily, report.projection)
    assert [t.name for t in daily.data] == ["models", "sandboxes"] and daily.layout.barmode == "stack"
    assert "projected $" in daily.layout.annotations[0].text
    split = cost_views.spend_split_figure(report.model_cost, report.by_backend)
    assert list(split.data[0].x) == ["models", "sandboxes: e2b", "sandboxes: local"]
    assert [t for t in cost_views.savings_figure(report.savings).data[0].text] == ["baseline", "saves 15%", "saves 49%"]


def test_cli_cost_report_runs_in_a_real_kernel(store: Store, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.UTC)
    store.insert_rows("llm_calls", [
        _call(now - dt.timedelta(hours=2), "claude", "haiku", "claude-haiku-5-5", (100_000, 0, 0, 0), 0.01),
        _call(now - dt.timedelta(days=3), "claude", "sonnet", "claude-sonnet-5-5", (100_000, 10_000, 0, 0), 0.30)])
    store.insert_rows("sandbox_sessions", [{"session_id": "s1", "backend": "e2b", "started_at": now - dt.timedelta(days=3),
                                            "cpu_s": 10.0, "est_cost_usd": 0.05}])
    exe = Path(sys.executable).with_name("fibreflow")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "fibreflow.cli"]
    proc = subprocess.run([*cmd, "report", "cost", "-p", "days=30", "--json"], cwd=tmp_path,
                          env={**os.environ, "FIBREFLOW_DB": str(store.path)}, capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    nb = nbformat.read(out["notebook"], as_version=4)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    html = Path(out["html"]).read_text()
    assert Path(out["notebook"]).parent == tmp_path / "reports" / "cost"
    assert html.count('class="plotly-graph-div"') == 6 and '<script src="http' not in html
    assert "models $0.31 (2 calls), sandboxes $0.05 (1 session)" in html
    assert "load_cost_report" not in html  # no code cells
