"""The what-if simulator, calibrated on recorded history in a real DuckDB store."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from fibreflow.cli import main
from fibreflow.config import Settings, SimulationSettings
from fibreflow.errors import ConfigError, SimulationError
from fibreflow.simulation.engine import (
    DEFAULT_MIXES,
    Calibration,
    optimize_model_routing,
    parse_mix,
    plan_capacity,
    simulate_add_agents,
)
from fibreflow.store import Store
from fibreflow.twin.sample_data import fill_sample_history

NOW = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)


def _settings(**simulation: object) -> Settings:
    return Settings(simulation=SimulationSettings(**simulation))


@pytest.fixture(scope="module")
def sample_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("sim") / "sample.duckdb"
    store = Store(path, lock_timeout_s=30)
    store.migrate()
    fill_sample_history(store, days=3, seed=1, now=NOW, sla_interval_min=15)
    return str(path)


def _history(store: Store, *, coders: int = 4, call_cost: float = 0.25, calls: int = 40) -> None:
    """One day of recorded work: ``coders`` coder attempts at once, each in its own sandbox,
    ``calls`` Sonnet calls of ``call_cost`` dollars; the first record is exactly a day old."""
    start = NOW - dt.timedelta(days=1)
    attempts, sessions = [], []
    for i in range(coders):
        begin, end = start + dt.timedelta(minutes=i), start + dt.timedelta(hours=1)
        attempts.append({"attempt_id": f"a{i}", "run_id": "r1", "feature_id": "f1", "iteration": 1, "agent": "coder",
                         "tier": "sonnet", "status": "passed" if i % 2 else "failed", "started_at": begin,
                         "ended_at": end, "duration_s": 3600.0})
        sessions.append({"session_id": f"s{i}", "backend": "local", "attempt_id": f"a{i}", "run_id": "r1",
                         "started_at": begin, "ended_at": end, "est_cost_usd": 0.0})
    store.insert_rows("attempts", attempts)
    store.insert_rows("sandbox_sessions", sessions)
    store.insert_rows("llm_calls", [
        {"call_id": f"c{i}", "run_id": "r1", "attempt_id": f"a{i % coders}", "agent": "coder", "tier": "sonnet",
         "model": "claude-sonnet-4-5", "input_tokens": 1000, "output_tokens": 100, "cache_creation_input_tokens": 0,
         "cache_read_input_tokens": 0, "cost_usd": call_cost, "status": "ok",
         "created_at": start + dt.timedelta(minutes=30 + i)} for i in range(calls)])


def test_doubling_the_recorded_cost_doubles_every_projected_cost(tmp_path, sample_db: str) -> None:
    import shutil

    copy = tmp_path / "doubled.duckdb"
    shutil.copy(sample_db, copy)
    doubled = Store(copy, lock_timeout_s=30)
    doubled.execute("UPDATE llm_calls SET cost_usd = cost_usd * 2")
    doubled.execute("UPDATE sandbox_sessions SET est_cost_usd = est_cost_usd * 2")
    before = Calibration.from_store(Store(sample_db), now=NOW, days=3, probe_postgres=False)
    after = Calibration.from_store(doubled, now=NOW, days=3, probe_postgres=False)
    assert before.monthly_cost > 0
    assert after.monthly_cost == pytest.approx(2 * before.monthly_cost)
    one = simulate_add_agents("coder", 5, calibration=before)
    two = simulate_add_agents("coder", 5, calibration=after)
    assert two.projected_cost == pytest.approx(2 * one.projected_cost, rel=1e-4)
    assert one.projected_cost > before.monthly_cost  # five more coders cost something
    for a, b in zip(optimize_model_routing(calibration=before), optimize_model_routing(calibration=after),
                    strict=True):
        assert a.scenario_name == b.scenario_name
        assert b.projected_cost == pytest.approx(2 * a.projected_cost, rel=1e-4)
    assert plan_capacity(0.1, calibration=after).projected_cost == pytest.approx(
        2 * plan_capacity(0.1, calibration=before).projected_cost, rel=1e-4)


def test_bottlenecks_appear_at_the_counts_the_history_implies(store: Store) -> None:
    _history(store)  # 4 coders at once, $10 a day -> $300 a month, $75 a month per coder
    cal = Calibration.from_store(store, now=NOW, settings=_settings(monthly_budget_usd=500), probe_postgres=False)
    assert cal.span_days == pytest.approx(1.0)
    assert cal.peak_sandboxes == 4 and cal.agents["coder"].instances == 4
    assert cal.monthly_cost == pytest.approx(300.0)
    fits = simulate_add_agents("coder", 2, calibration=cal)
    assert fits.projected_cost == pytest.approx(450.0)
    assert fits.bottlenecks == []
    over = simulate_add_agents("coder", 3, calibration=cal)
    assert [b.split(":")[0] for b in over.bottlenecks] == ["monthly budget (USD)"]
    assert over.details["headroom"]["E2B hobby plan: concurrent sandboxes"] == 16
    assert over.details["headroom"]["monthly budget (USD)"] == 2
    rich = Calibration.from_store(store, now=NOW, settings=_settings(monthly_budget_usd=1e9), probe_postgres=False)
    assert not any("E2B hobby" in b for b in simulate_add_agents("coder", 16, calibration=rich).bottlenecks)
    assert any(b.startswith("E2B hobby plan") for b in simulate_add_agents("coder", 17, calibration=rich).bottlenecks)
    assert not any("E2B pro" in b for b in simulate_add_agents("coder", 96, calibration=rich).bottlenecks)
    pg = simulate_add_agents("coder", 92, calibration=rich)  # 5 base + 4 recorded + 92 new > 100
    assert any(b.startswith("PostgreSQL connections: 101") for b in pg.bottlenecks)
    assert pg.recommendations and "PgBouncer" in " ".join(pg.recommendations)


def test_capacity_plan_names_the_month_each_limit_is_reached(store: Store) -> None:
    _history(store)
    cal = Calibration.from_store(store, now=NOW, settings=_settings(monthly_budget_usd=500), probe_postgres=False)
    result = plan_capacity(0.5, months=6, calibration=cal)
    reached = {x["name"]: x["month_reached"] for x in result.details["limits"]}
    assert reached["monthly budget (USD)"] == 2           # 300 * 1.5^2 = 675 > 500, 450 is not
    assert reached["E2B hobby plan: concurrent sandboxes"] == 4  # 4 * 1.5^4 = 20.25 > 20
    assert reached["E2B pro plan: concurrent sandboxes"] is None
    assert result.bottlenecks[0].startswith("monthly budget (USD): exceeded in month 2")
    assert result.projected_cost == pytest.approx(300 * 1.5 ** 6, rel=1e-4)
    flat = plan_capacity(0.0, months=6, calibration=cal)
    assert flat.bottlenecks == [] and "no limit is reached" in flat.recommendations[0]
    with pytest.raises(ConfigError, match="growth"):
        plan_capacity(-1.5, calibration=cal)


def test_routing_mixes_come_cheapest_first_with_quality_risk_from_recorded_success(sample_db: str) -> None:
    cal = Calibration.from_store(Store(sample_db), now=NOW, days=3, probe_postgres=False)
    results = optimize_model_routing(DEFAULT_MIXES, calibration=cal)
    costs = [r.projected_cost for r in results]
    assert costs == sorted(costs)
    by_name = {r.scenario_name: r for r in results}
    assert set(by_name) == {"recorded", *DEFAULT_MIXES}
    assert by_name["80/18/2"].projected_cost < by_name["70/25/5"].projected_cost < by_name["60/35/5"].projected_cost
    recorded = by_name["recorded"]
    assert recorded.details["model_cost"] == pytest.approx(cal.model_cost * cal.per_month, rel=1e-6)
    assert recorded.projected_sla_impact == 0.0
    fail = {t: cal.tiers[t].failure_rate for t in ("haiku", "sonnet", "opus")}
    assert fail["haiku"] > fail["sonnet"] > fail["opus"]  # as recorded in the sample history
    assert by_name["80/18/2"].details["quality_risk"] > by_name["60/35/5"].details["quality_risk"]
    assert by_name["80/18/2"].projected_sla_impact < by_name["60/35/5"].projected_sla_impact


def test_sla_impact_comes_from_how_recorded_values_follow_the_load(sample_db: str) -> None:
    cal = Calibration.from_store(Store(sample_db), now=NOW, days=3, probe_postgres=False)
    assert any(p.slope > 0 for p in cal.slas.values())  # the sample's latencies rise with the call load
    impacts = [simulate_add_agents("coder", n, calibration=cal).projected_sla_impact for n in (0, 5, 40)]
    assert impacts[0] == 0.0
    assert impacts[0] >= impacts[1] >= impacts[2]
    assert impacts[2] < 0


def test_postgres_limits_are_read_from_the_real_server(store: Store, pg_dsn: str) -> None:
    import psycopg

    _history(store)
    cal = Calibration.from_store(store, now=NOW, settings=_settings(postgres_url=pg_dsn))
    with psycopg.connect(pg_dsn) as con:
        max_conn = int(con.execute("SHOW max_connections").fetchone()[0])
        reserved = int(con.execute("SHOW superuser_reserved_connections").fetchone()[0])
    assert cal.pg_source == "server"
    assert cal.pg_max_connections == max_conn - reserved
    down = Calibration.from_store(store, now=NOW, settings=_settings(
        postgres_url="postgresql://postgres@127.0.0.1:1/none", postgres_max_connections=42))
    assert (down.pg_source, down.pg_max_connections) == ("config", 42)


def test_bad_input_and_an_empty_store_are_named(store: Store) -> None:
    with pytest.raises(SimulationError, match="no model calls or attempts recorded"):
        Calibration.from_store(store, now=NOW, probe_postgres=False)
    _history(store)
    cal = Calibration.from_store(store, now=NOW, probe_postgres=False)
    with pytest.raises(ConfigError, match="unknown agent type 'nobody'.*coder"):
        simulate_add_agents("nobody", 1, calibration=cal)
    assert parse_mix("cheap=80/18/2") == ("cheap", pytest.approx((0.8, 0.18, 0.02)))
    assert parse_mix("0.6/0.35/0.05")[1] == pytest.approx((0.6, 0.35, 0.05))
    for bad in ("x=80/18", "x=80/30/5", "x=a/b/c"):
        with pytest.raises(ConfigError, match="--mix"):
            parse_mix(bad)


def test_cli_prints_scenarios_as_json(sample_db: str, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FIBREFLOW_DB", sample_db)
    assert main(["simulate", "routing", "--mix", "cheap=80/18/2", "--mix", "rich=40/40/20", "--json",
                 "--days", "3650"]) == 0
    out = json.loads(capsys.readouterr().out)
    names = [s["scenario_name"] for s in out["scenarios"]]
    assert set(names) == {"recorded", "cheap", "rich"}
    assert [s["projected_cost"] for s in out["scenarios"]] == sorted(s["projected_cost"] for s in out["scenarios"])
    assert main(["simulate", "add-agents", "coder", "3", "--json", "--days", "3650"]) == 0
    added = json.loads(capsys.readouterr().out)
    assert {"scenario_name", "projected_cost", "projected_sla_impact", "bottlenecks", "recommendations"} <= set(added)
    assert main(["simulate", "capacity", "--growth", "0.2", "--days", "3650"]) == 0
    assert "growth +20%/month" in capsys.readouterr().out
    assert main(["simulate", "add-agents", "nobody", "3", "--days", "3650"]) == 2
    assert "unknown agent type 'nobody'" in capsys.readouterr().err
    assert main(["simulate", "routing", "--mix", "bad=1/2"]) == 2


def test_under_a_week_of_history_gives_a_warning_and_a_range(store: Store, tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from fibreflow.simulation.engine import results_frame

    _history(store)  # exactly one day
    cal = Calibration.from_store(store, now=NOW, days=30, probe_postgres=False)
    assert cal.span_days == pytest.approx(1.0) and cal.short_history
    results = [simulate_add_agents("coder", 2, calibration=cal), plan_capacity(0.2, calibration=cal),
               *optimize_model_routing(calibration=cal)]
    for r in results:
        assert r.warning and "1.0 days" in r.warning and "under 7 days" in r.warning
        low, high = r.cost_range
        assert low < r.projected_cost < high  # x1.8 either way at one day (1 + 0.3 * sqrt(7))
        assert high / r.projected_cost == pytest.approx(1 + 0.3 * 7 ** 0.5, rel=1e-3)
        assert " to $" in r.cost_text() and "Warning" in r._repr_html_()
    assert " to $" in results_frame(results)["projected_cost"][0]
    # the CLI calibrates up to the real clock: twelve hours of calls ending an hour ago
    recent = Store(tmp_path / "recent.duckdb", lock_timeout_s=30)
    recent.migrate()
    now = dt.datetime.now(dt.UTC)
    recent.insert_rows("llm_calls", [
        {"call_id": f"c{i}", "run_id": "r1", "agent": "coder", "tier": "sonnet", "model": "claude-sonnet-4-5",
         "input_tokens": 1000, "output_tokens": 100, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
         "cost_usd": 0.25, "status": "ok", "created_at": now - dt.timedelta(hours=12 - i)} for i in range(12)])
    monkeypatch.setenv("FIBREFLOW_DB", str(recent.path))
    assert main(["simulate", "capacity", "--growth", "0.2", "--days", "30"]) == 0
    out = capsys.readouterr().out
    assert "WARNING: calibrated on only 12 hours" in out and " to $" in out
    assert main(["simulate", "capacity", "--growth", "0.2", "--days", "30", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["warning"] and doc["calibration"]["warning"] and len(doc["cost_range"]) == 2


def test_a_week_of_history_gives_one_number_without_a_warning(store: Store) -> None:
    _history(store)
    store.insert_rows("llm_calls", [{
        "call_id": "old", "run_id": "r0", "agent": "coder", "tier": "sonnet", "model": "claude-sonnet-4-5",
        "input_tokens": 10, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
        "cost_usd": 0.01, "status": "ok", "created_at": NOW - dt.timedelta(days=8)}])
    cal = Calibration.from_store(store, now=NOW, days=30, probe_postgres=False)
    assert not cal.short_history
    r = simulate_add_agents("coder", 2, calibration=cal)
    assert r.warning is None and r.cost_range is None and " to " not in r.cost_text()
