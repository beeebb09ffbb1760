"""Pricing from data/pricing.yaml and the cost analysis of llm_calls and JSON-lines logs."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from anthropic.types import Usage
from store_support import filled_store, store_unchanged

import fibreflow.cli as cli
from fibreflow.config import load_settings
from fibreflow.costs.analysis import analyze_costs
from fibreflow.errors import ConfigError
from fibreflow.models.pricing import Pricing, resolve_path
from fibreflow.store import Store

NOW = dt.datetime(2026, 3, 31, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def pricing() -> Pricing:
    return Pricing.load(resolve_path("data/pricing.yaml"))


def test_every_tier_model_is_priced_with_the_documented_multipliers(pricing: Pricing) -> None:
    for tier, model in load_settings().models.tiers.items():
        r = pricing.rates(model)
        assert r.input > 0 and r.output > r.input, tier
    for r in pricing.models.values():
        if r.model.startswith("claude-3-"):
            continue  # retired models: the page rounded their cache prices to the cent
        for card in (r, r.long) if r.long else (r,):
            assert card.cache_write_5m == pytest.approx(1.25 * card.input), r.model
            assert card.cache_write_1h == pytest.approx(2.0 * card.input), r.model
            # 0.1x input, or 0.05x on the models where Anthropic cut cache hits
            assert 0.05 * card.input - 1e-9 <= card.cache_read <= 0.1 * card.input + 1e-9, r.model
    assert pricing.batch_discount == 0.5


def test_published_prices_of_the_default_models(pricing: Pricing) -> None:
    def io(model: str) -> tuple[float, float]:
        return pricing.rates(model).input, pricing.rates(model).output

    assert load_settings().models.tiers == {"haiku": "claude-haiku-5-5", "sonnet": "claude-sonnet-5-5",
                                            "opus": "claude-opus-5-5"}
    assert (io("claude-haiku-5-5"), io("claude-sonnet-5-5"), io("claude-opus-5-5")) == \
        ((0.10, 0.50), (2.0, 10.0), (4.0, 20.0))
    assert (io("claude-haiku-4-5"), io("claude-sonnet-4-5"), io("claude-opus-4-1")) == \
        ((1.0, 5.0), (3.0, 15.0), (15.0, 75.0))


def test_each_token_kind_is_priced_once(pricing: Pricing) -> None:
    usage = {"input_tokens": 1000, "output_tokens": 500, "cache_creation_input_tokens": 2000,
             "cache_read_input_tokens": 10_000}
    # 1000*$2 + 500*$10 + 2000*$2.50 + 10000*$0.10, per million
    assert pricing.price_usage("claude-sonnet-5-5", usage) == pytest.approx(0.013)
    assert pricing.price_usage("claude-sonnet-5-5", usage, cache_ttl="1h") == pytest.approx(0.016)
    assert pricing.price_usage("claude-sonnet-5-5", usage, batch=True) == pytest.approx(0.0065)
    # 1000*$3 + 500*$15 + 2000*$3.75 + 10000*$0.30
    assert pricing.price_usage("claude-sonnet-4-5", usage) == pytest.approx(0.021)


def test_long_prompts_bill_every_token_at_the_long_rate(pricing: Pricing) -> None:
    at = {"input_tokens": 60_000, "output_tokens": 1000, "cache_read_input_tokens": 40_000}
    over = {**at, "cache_creation_input_tokens": 1}
    assert pricing.price_usage("claude-haiku-5-5", at) == pytest.approx((60_000 * 0.10 + 1000 * 0.50
                                                                         + 40_000 * 0.01) / 1e6)
    assert pricing.price_usage("claude-haiku-5-5", over) == pytest.approx((60_000 * 0.50 + 1000 * 2.50
                                                                           + 40_000 * 0.05 + 0.625) / 1e6)


def test_the_per_ttl_split_prices_each_part_at_its_own_rate(pricing: Pricing) -> None:
    usage = Usage(input_tokens=100, output_tokens=10, cache_creation_input_tokens=3000,
                  cache_read_input_tokens=0,
                  cache_creation={"ephemeral_5m_input_tokens": 1000, "ephemeral_1h_input_tokens": 2000})
    expected = (100 * 1.0 + 10 * 5.0 + 1000 * 1.25 + 2000 * 2.0) / 1e6
    assert pricing.price_usage("claude-haiku-4-5", usage) == pytest.approx(expected)


def test_dated_ids_resolve_and_unknown_models_name_the_file(pricing: Pricing) -> None:
    assert pricing.rates("claude-haiku-4-5-20251001").model == "claude-haiku-4-5"
    assert pricing.rates("claude-sonnet-4-5-20991231").model == "claude-sonnet-4-5"
    with pytest.raises(ConfigError) as err:
        pricing.rates("gpt-4o")
    assert "gpt-4o" in str(err.value) and "pricing.yaml" in str(err.value)


def test_bad_pricing_files_name_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "pricing.yaml"
    bad.write_text("models:\n  m1:\n    input: 1\n    output: -5\n    cache_write_5m: 1\n"
                   "    cache_write_1h: 2\n    cache_read: 0.1\n")
    with pytest.raises(ConfigError) as err:
        Pricing.load(bad)
    assert f"{bad}:4" in str(err.value) and "output" in str(err.value)
    typo = tmp_path / "typo.yaml"
    typo.write_text("models:\n  m1: {input: 1, output: 5, cache_write_5m: 1, cache_write_1h: 2, cache_read: 0.1, "
                    "cache_hit: 1}\n")
    with pytest.raises(ConfigError, match="cache_hit"):
        Pricing.load(typo)


def _line(ts: dt.datetime, model: str, agent: str | None, task: str | None, inp: int, out: int,
          cw: int = 0, cr: int = 0) -> str:
    obj = {"timestamp": ts.isoformat().replace("+00:00", "Z"), "agent": agent, "model": model,
           "input_tokens": inp, "output_tokens": out, "cache_creation_input_tokens": cw,
           "cache_read_input_tokens": cr}
    if task is not None:
        obj["task"] = task
    return json.dumps(obj)


def test_analyze_a_log_with_malformed_lines(tmp_path: Path, pricing: Pricing) -> None:
    log = tmp_path / "agent-commands.jsonl"
    day = dt.timedelta(days=1)
    log.write_text("\n".join([
        _line(NOW - day, "claude-sonnet-4-5", "ops-bot", "Check disk space on vps-1", 1000, 100),
        "{not json",
        _line(NOW - 2 * day, "claude-sonnet-4-5", "vps-monitor", None, 2000, 200, cr=1000),
        json.dumps({"timestamp": NOW.isoformat(), "input_tokens": 5}),
        _line(NOW - 3 * day, "claude-sonnet-4-5", "code-agent", "Refactor the alert sender and add unit tests",
              4000, 800, cw=1000),
        _line(NOW - 40 * day, "claude-sonnet-4-5", "ops-bot", "Check disk space", 10**6, 0),  # outside the window
        _line(NOW - day, "gpt-4o", "ops-bot", "list files", 10, 10),
        _line(NOW - day, "claude-opus-4-1", None, None, 100, 10),
        "",
    ]) + "\n")
    result = analyze_costs(None, [log], days=30, now=NOW, pricing=pricing)
    d = result.to_dict()
    assert [(m["line"], m["file"]) for m in d["malformed_lines"]] == [(2, str(log)), (4, str(log)), (7, str(log))]
    assert "unknown model 'gpt-4o'" in d["malformed_lines"][2]["error"]
    assert d["calls"] == 4 and d["unclassified"] == 1
    s = lambda u: pricing.price_usage("claude-sonnet-4-5", u)  # noqa: E731  the logged model
    S = lambda u: pricing.price_usage("claude-sonnet-5-5", u)  # noqa: E731, N806  the sonnet tier
    h = lambda u: pricing.price_usage("claude-haiku-5-5", u)  # noqa: E731
    u1 = {"input_tokens": 1000, "output_tokens": 100}
    u2 = {"input_tokens": 2000, "output_tokens": 200, "cache_read_input_tokens": 1000}
    u3 = {"input_tokens": 4000, "output_tokens": 800, "cache_creation_input_tokens": 1000}
    u4 = {"input_tokens": 100, "output_tokens": 10}
    opus41 = pricing.price_usage("claude-opus-4-1", u4)
    assert result.current_cost == pytest.approx(s(u1) + s(u2) + s(u3) + opus41)
    # check -> haiku by its words, vps-monitor -> haiku by its agent rule, refactor stays sonnet,
    # the call without text or rule keeps its own model
    assert result.routed_cost == pytest.approx(h(u1) + h(u2) + S(u3) + opus41)
    assert result.all_sonnet_cost == pytest.approx(S(u1) + S(u2) + S(u3) + S(u4))
    assert d["by_tier"]["haiku"]["calls"] == 2 and d["by_tier"]["unclassified"]["calls"] == 1
    assert d["by_agent"]["vps-monitor"]["savings"] == pytest.approx(s(u2) - h(u2), abs=1e-6)
    assert d["by_agent"]["(none)"]["savings"] == 0
    assert set(d) >= {"current_cost", "routed_cost", "all_sonnet_cost", "by_tier", "by_agent", "malformed_lines"}


def test_analyze_llm_calls_from_the_store(store: Store, pricing: Pricing) -> None:
    rows = [
        {"call_id": "a", "agent": "ops-bot", "tier": "sonnet", "model": "claude-sonnet-4-5", "try_no": 1,
         "input_tokens": 1000, "output_tokens": 100, "cache_creation_input_tokens": 0,
         "cache_read_input_tokens": 0, "cost_usd": 0.0045, "status": "ok",
         "created_at": NOW - dt.timedelta(hours=1), "task_text": "Is the nginx service up?"},
        {"call_id": "b", "agent": "ops-bot", "tier": "sonnet", "model": "claude-sonnet-4-5", "try_no": 1,
         "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "status": "overloaded",
         "created_at": NOW - dt.timedelta(hours=1)},
    ]
    store.insert_rows("llm_calls", rows)
    result = analyze_costs(store, days=7, now=NOW, pricing=pricing)
    assert result.calls == 1
    assert result.current_cost == pytest.approx(0.0045)
    assert result.routed_cost == pytest.approx(pricing.price_usage("claude-haiku-5-5", {"input_tokens": 1000,
                                                                                          "output_tokens": 100}))


def test_cost_analyze_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("fibreflow.cli.cost",))
    log = tmp_path / "calls.jsonl"
    now = dt.datetime.now(dt.UTC)
    log.write_text(_line(now - dt.timedelta(hours=2), "claude-sonnet-4-5", "ops-bot", "list open incidents",
                         1000, 100) + "\n[]\n")
    assert cli.main(["cost", "analyze", str(log), "--days", "7", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["calls"] == 1 and out["routed_cost"] < out["all_sonnet_cost"] < out["current_cost"]
    assert out["malformed_lines"] == [{"file": str(log), "line": 2, "error": "a line must be one JSON object"}]
    assert cli.main(["cost", "analyze", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err


_GOOD = {"model": "claude-sonnet-4-5", "agent": "ops-bot", "task": "list open incidents",
         "input_tokens": 1000, "output_tokens": 100}


@pytest.mark.parametrize("bad, error", [
    ('{"timestamp": 1e20, "model": "claude-sonnet-4-5", "input_tokens": 1}', "timestamp"),
    ('{"timestamp": Infinity, "model": "claude-sonnet-4-5", "input_tokens": 1}', "timestamp"),
    ('{"timestamp": NaN, "model": "claude-sonnet-4-5", "input_tokens": 1}', "timestamp"),
    ('{"timestamp": "2026-03-30T12:00:00Z", "model": "claude-sonnet-4-5", "input_tokens": Infinity}',
     "usage.input_tokens"),
    ('{"timestamp": "2026-03-30T12:00:00Z", "model": "claude-sonnet-4-5", "output_tokens": 1' + "0" * 400 + "}",
     "usage.output_tokens"),
    ('{"timestamp": "2026-03-30T12:00:00Z", "model": "claude-sonnet-4-5", "agent": ["a", "b"]}', "agent"),
    ('{"timestamp": "2026-03-30T12:00:00Z", "model": "claude-sonnet-4-5", "agent": {"name": "a"}}', "agent"),
    ('{"timestamp": "2026-03-30T12:00:00Z", "model": "claude-sonnet-4-5", "agent": 7}', "agent"),
    ("[" * 5000 + "]" * 5000, "nested"),
    ('{"timestamp": "2026-03-30T12:00:00Z", "model": "claude-sonnet-4-5", "task": "' + "x" * (2 << 20) + '"}',
     "longer than"),
], ids=["time-1e20", "time-inf", "time-nan", "tokens-inf", "tokens-10**400", "agent-list", "agent-object",
        "agent-number", "deep", "long-line"])
def test_hostile_log_lines_are_listed_as_malformed_and_the_rest_analysed(
        tmp_path: Path, pricing: Pricing, capsys: pytest.CaptureFixture[str], bad: str, error: str) -> None:
    good = json.dumps({"timestamp": (NOW - dt.timedelta(days=1)).isoformat(), **_GOOD})
    log = tmp_path / "calls.jsonl"
    log.write_text(f"{good}\n{bad}\n{good}\n")
    result = analyze_costs(None, [log], days=30, now=NOW, pricing=pricing)
    assert result.calls == 2
    [malformed] = result.malformed_lines
    assert malformed["file"] == str(log) and malformed["line"] == 2 and error in malformed["error"]
    assert len(malformed["error"]) < 500
    assert cli.main(["cost", "analyze", str(log), "--no-store", "--days", "36500", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["calls"] == 2 and [m["line"] for m in out["malformed_lines"]] == [2]


@pytest.mark.parametrize("argv", [
    ["cost", "analyze", "--days", "1e10"], ["cost", "analyze", "--days", "nan"], ["cost", "analyze", "--days", "inf"],
])
def test_days_out_of_range_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     argv: list[str]) -> None:
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "--days must be above 0 and at most 36500" in err and "Traceback" not in err


def test_null_token_columns_in_llm_calls_are_counted_as_zero(store: Store, pricing: Pricing) -> None:
    from fibreflow.costs.report import load_cost_report
    from fibreflow.models.client import insert_calls

    at = NOW - dt.timedelta(hours=1)
    insert_calls(store, [
        {"call_id": "a", "agent": "ops-bot", "tier": "sonnet", "model": "claude-sonnet-4-5", "status": "ok",
         "input_tokens": 1000, "output_tokens": None, "cache_creation_input_tokens": None,
         "cache_read_input_tokens": None, "cost_usd": 0.003, "created_at": at, "task_text": "Is nginx up?"},
        {"call_id": "b", "agent": None, "tier": None, "model": "claude-sonnet-4-5", "status": "ok",
         "input_tokens": None, "output_tokens": 100, "cache_creation_input_tokens": None,
         "cache_read_input_tokens": None, "cost_usd": None, "created_at": at},
    ])
    result = analyze_costs(store, days=7, now=NOW, pricing=pricing)
    unpriced = pricing.price_usage("claude-sonnet-4-5", {"output_tokens": 100})  # no recorded cost: priced now
    assert result.calls == 2 and result.current_cost == pytest.approx(0.003 + unpriced)
    report = load_cost_report(days=7, db_path=store.path, now=NOW)
    assert len(report.calls) == 2
    assert sorted(report.calls["input_tokens"]) == [0, 1000] and sorted(report.calls["output_tokens"]) == [0, 100]
    assert report.model_cost == pytest.approx(0.003 + unpriced)


@pytest.mark.parametrize("bad, error", [
    ('{"timestamp": "yesterday", "model": "claude-sonnet-4-5", "input_tokens": 1}', "timestamp"),
    ('{"timestamp": "2026-13-45T12:00:00Z", "model": "claude-sonnet-4-5", "input_tokens": 1}', "timestamp"),
    ('{"timestamp": -1e300, "model": "claude-sonnet-4-5", "input_tokens": 1}', "timestamp"),
    ('{"timestamp": null, "model": "claude-sonnet-4-5", "input_tokens": 1}', "timestamp"),
    ('{"model": "claude-sonnet-4-5", "input_tokens": 1}', "no timestamp"),
    ('{"timestamp": "2026-03-30T12:00:00Z", "model": "claude-sonnet-4-5", "input_tokens": -5}',
     "usage.input_tokens must be a number from 0"),
    ('{"timestamp": "2026-03-30T12:00:00Z", "model": "claude-sonnet-4-5", "input_tokens": 5, "output_tokens": -1}',
     "usage.output_tokens must be a number from 0"),
    ('{"timestamp": "2026-03-30T12:00:00Z", "model": "claude-sonnet-4-5", "cache_read_input_tokens": -1}',
     "usage.cache_read_input_tokens must be a number from 0"),
    ('{"timestamp": "2026-03-30T12:00:00Z", "model": "claude-sonnet-4-5", "cache_creation_input_tokens": -0.5}',
     "usage.cache_creation_input_tokens must be a number from 0"),
], ids=["time-words", "time-month-13", "time-far-past", "time-null", "time-missing", "input-negative",
        "output-negative", "cache-read-negative", "cache-write-negative"])
def test_bad_timestamps_and_negative_tokens_name_file_line_and_field_and_leave_the_store_alone(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str, error: str) -> None:
    store = filled_store(tmp_path / "fibreflow.duckdb")  # FIBREFLOW_DB: the CLI reads its llm_calls too
    good = json.dumps({"timestamp": (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat(), **_GOOD})
    log = tmp_path / "calls.jsonl"
    log.write_text(f"{good}\n{good}\n{bad}\n")
    with store_unchanged(store.path) as before:
        assert cli.main(["cost", "analyze", str(log), "--days", "36500", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    [malformed] = out["malformed_lines"]
    assert (malformed["file"], malformed["line"]) == (str(log), 3)
    assert error in malformed["error"], malformed["error"]
    assert out["calls"] == 2 + before.row_counts["llm_calls"]  # the good lines and the store's calls, no more
