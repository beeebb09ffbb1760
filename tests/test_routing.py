"""The model router: word patterns, the short-task rule, agent rules, overrides, speed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fibreflow.cli as cli
from fibreflow.benchmarks import router as router_bench
from fibreflow.config import ModelsSettings, Settings
from fibreflow.errors import BenchmarkError, ConfigError
from fibreflow.models.routing import PATTERNS, ModelRouter


@pytest.fixture
def router() -> ModelRouter:
    return ModelRouter(Settings())


def tier(router: ModelRouter, text: str, agent: str | None = None) -> str:
    return router.classify_request(text, agent).tier


def test_at_least_twenty_patterns_per_tier() -> None:
    assert {t: len(p) >= 20 for t, p in PATTERNS.items()} == {"haiku": True, "sonnet": True, "opus": True}


def test_each_tier_on_typical_requests(router: ModelRouter) -> None:
    assert tier(router, "Check disk space on vps-1") == "haiku"
    assert tier(router, "Ping the staging database and report whether it answers within a second") == "haiku"
    assert tier(router, "Does the nightly export file exist in the share folder this morning?") == "haiku"
    assert tier(router, "Write a function that parses the contractor CSV and returns typed records") == "sonnet"
    assert tier(router, "Debug why the sync job times out on large batches of photos") == "sonnet"
    assert tier(router, "Design the architecture for moving the sync onto an event-driven queue") == "opus"
    assert tier(router, "Deploy v2.3 to production") == "opus"


def test_patterns_match_words_not_substrings(router: ModelRouter) -> None:
    # "catalog" holds "cat" and "log", "shipping" holds "ping", "testimonials" holds "test",
    # "designer" holds "design": none of them is the word
    d = router.classify_request("Summarize the catalog of shipping testimonials from the designer team")
    assert d.tier == "haiku"
    assert all(p not in d.reason for p in ("'cat'", "'log'", "'ping'", "'test'", "'design'"))
    assert tier(router, "Update the designer's onboarding email copy with the new address") == "sonnet"
    assert "retry" not in router.classify_request("Write a poetry generator for the team party").reason


def test_inflections_match(router: ModelRouter) -> None:
    assert "'debug'" in router.classify_request("Debugging the broken importer again").reason
    assert "'check'" in router.classify_request("checking the uptime of vps-2").reason
    assert "'deploy+production'" in router.classify_request("We deployed the worker to production").reason


def test_identifiers_are_not_words(router: ModelRouter) -> None:
    d = router.classify_request("Show the owner of branch fix_sync_timeout")
    assert d.tier == "haiku" and "fix" not in d.reason


def test_short_tasks_lean_to_haiku_unless_a_stronger_signal(router: ModelRouter) -> None:
    d = router.classify_request("tidy up")
    assert d.tier == "haiku" and "short task" in d.reason
    assert tier(router, "tidy up the thing we talked about in the meeting last Tuesday, thanks") == "sonnet"
    assert tier(router, "Fix the crash in the importer") == "sonnet"
    assert tier(router, "Redesign the auth architecture") == "opus"


def test_agent_rules_and_the_override(router: ModelRouter) -> None:
    d = router.classify_request("Write a script that rotates logs", "vps-monitor")
    assert (d.tier, d.reason) == ("haiku", "agent rule: vps-monitor -> haiku")
    assert tier(router, "list the photos", "vlm-evaluator") == "sonnet"
    d = router.classify_request("list files", "vps-monitor", tier="opus")
    assert (d.tier, d.model_id, d.reason) == ("opus", "claude-opus-5-5", "explicit override: opus")
    custom = ModelRouter(Settings(models=ModelsSettings(agent_rules={"architect-bot": "opus"},
                                                        tiers={"opus": "claude-opus-4-6"})))
    assert custom.classify_request("ls", "architect-bot").model_id == "claude-opus-4-6"
    assert custom.classify_request("Write a script that rotates logs", "vps-monitor").tier == "sonnet"


def test_unknown_tiers_are_config_errors(router: ModelRouter) -> None:
    with pytest.raises(ConfigError, match="unknown tier 'gpt'"):
        router.get_model_id("gpt")
    with pytest.raises(ValueError, match="unknown tier"):
        ModelsSettings(agent_rules={"x": "large"})


def test_bad_tiers_in_fibreflow_yaml_name_file_and_line(tmp_path: Path) -> None:
    from fibreflow.config import load_settings

    cfg = tmp_path / "fibreflow.yaml"
    cfg.write_text("models:\n  tiers:\n    gpt: gpt-4o\n")
    with pytest.raises(ConfigError, match=rf"{cfg}:2: models.tiers: .*unknown tier 'gpt'"):
        load_settings(cfg)


def test_router_bench_on_the_shipped_labels(capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("fibreflow.cli.bench",))
    assert cli.main(["bench", "router", "--json", "--repeat", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["rows"] >= 150 and out["accuracy"] > 0.9
    assert set(out["confusion"]) == {"haiku", "sonnet", "opus"}
    assert sum(sum(r.values()) for r in out["confusion"].values()) == out["rows"]
    assert out["labeled_distribution"]["haiku"] > 0.6 and out["labeled_distribution"]["opus"] < 0.1
    assert abs(sum(out["distribution"].values()) - 1) < 0.01
    assert out["p99_ms"] > 0  # the 1 ms goal is the benchmark's to judge, not a test's
    assert out["routed_cost_usd"] > 0 and out["all_sonnet_cost_usd"] > 0


def test_router_bench_rejects_bad_labels(tmp_path: Path) -> None:
    bad = tmp_path / "labels.csv"
    bad.write_text("text,agent,tier\nCheck disk,,haiku\nList files,,large\n")
    with pytest.raises(BenchmarkError, match=r"labels.csv:3: tier 'large'"):
        router_bench.load_labels(bad)
    (tmp_path / "nocol.csv").write_text("task,tier\nx,haiku\n")
    with pytest.raises(BenchmarkError, match="missing column"):
        router_bench.load_labels(tmp_path / "nocol.csv")


def test_route_cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("fibreflow.cli.route",))
    assert cli.main(["route", "Deploy release 2.4 to production", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"tier": "opus", "model_id": "claude-opus-5-5", "reason": out["reason"]} and out["reason"]
    assert cli.main(["route", "check disk", "--agent", "vps-monitor", "--model", "sonnet"]) == 0
    text = capsys.readouterr().out
    assert "sonnet" in text and "explicit override" in text
    with pytest.raises(SystemExit) as exc:
        cli.main(["route", "x", "--model", "gpt"])
    assert exc.value.code == 2


def test_model_overrides_resolve_to_a_tier_with_reason_override(router: ModelRouter) -> None:
    from fibreflow.models.pricing import Pricing

    pricing = Pricing.load()
    assert router.resolve_override("opus", pricing=pricing).to_dict() == {
        "tier": "opus", "model_id": "claude-opus-5-5", "reason": "override"}
    assert router.resolve_override("claude-haiku-4-5", pricing=pricing).to_dict() == {
        "tier": "haiku", "model_id": "claude-haiku-4-5", "reason": "override"}
    with pytest.raises(ConfigError, match="--model 'gpt-5' is neither a tier") as err:
        router.resolve_override("gpt-5", pricing=pricing)
    assert err.value.key == "--model"
