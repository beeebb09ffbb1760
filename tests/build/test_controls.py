"""Controls: ``--model TIER|MODEL_ID``, a feature's logical agent picking its tier through its rule,
and every attempt's tier and why (the real anthropic SDK against the scripted model, offline)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from repo_support import demo_repo_and_features, write_demo_features
from store_support import store_unchanged

from fibreflow.cli import main
from fibreflow.store import Store


def _build(repo: Path, features: Path, *extra: str) -> list[str]:
    return ["build", str(features), "--repo", str(repo), "--agent", "claude", "--offline", "--agent-script",
            "demo_feature", "--profile", "quick", "--json", "--no-progress", *extra]


def _attempts(store: Store, run_id: str) -> list[tuple[str, str]]:
    rows = store.query_df("SELECT tier, tier_reason FROM attempts WHERE run_id = ?", [run_id])
    return list(zip(rows["tier"], rows["tier_reason"], strict=True))


def _models(store: Store, run_id: str) -> set[str]:
    return set(store.query_df("SELECT model FROM llm_calls WHERE run_id = ?", [run_id])["model"])


@pytest.mark.slow
def test_model_override_by_tier_or_id_is_recorded_as_override(store, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    repo, features = demo_repo_and_features(tmp_path)
    assert main(_build(repo, features, "--model", "opus")) == 0
    run = json.loads(capsys.readouterr().out)["run_id"]
    assert _attempts(store, run) == [("opus", "override")] and _models(store, run) == {"claude-opus-5-5"}

    assert main(_build(repo, features, "--model", "claude-haiku-4-5")) == 0
    run = json.loads(capsys.readouterr().out)["run_id"]
    assert _attempts(store, run) == [("haiku", "override")] and _models(store, run) == {"claude-haiku-4-5"}

    assert main(_build(repo, features)) == 0  # routed: the tier and the router's reason are recorded
    run = json.loads(capsys.readouterr().out)["run_id"]
    (tier, reason), = _attempts(store, run)
    assert tier == "sonnet" and reason.startswith("matched sonnet patterns") and "'fix'" in reason


@pytest.mark.slow
def test_a_features_logical_agent_picks_its_tier_by_rule(store, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    repo, features = demo_repo_and_features(tmp_path, agent="vps-monitor")
    assert main(_build(repo, features)) == 0
    out = json.loads(capsys.readouterr().out)
    assert _attempts(store, out["run_id"]) == [("haiku", "agent rule: vps-monitor -> haiku")]
    assert _models(store, out["run_id"]) == {"claude-haiku-5-5"} and out["features"][0]["tiers"] == ["haiku"]


def test_bad_controls_exit_2_naming_the_option_or_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, features = demo_repo_and_features(tmp_path)
    db = tmp_path / "fibreflow.duckdb"
    main(["build", "warm up the store", "--repo", str(repo), "--agent-command", "true", "--no-progress"])
    capsys.readouterr()
    with store_unchanged(db, check_bytes=False):
        assert main(_build(repo, features, "--model", "gpt-5")) == 2
        err = capsys.readouterr().err
        assert "--model 'gpt-5' is neither a tier (haiku, sonnet, opus) nor a model ID priced in" in err
        assert main(_build(repo, features, "--model", "opus", "--escalate")) == 2
        assert "--model or --escalate" in capsys.readouterr().err

        features = write_demo_features(tmp_path, agent="no-such-bot")
        assert main(_build(repo, features)) == 2
        err = capsys.readouterr().err
        line = next(i for i, text in enumerate(features.read_text().splitlines(), 1) if '"agent"' in text)
        assert f"{features}:{line}: feature 'fix-add': field 'agent': 'no-such-bot' is neither an agent" in err
        assert "vps-monitor" in err  # the rules there are

        autopilot = ["build", "--autopilot", str(features), "--repo", str(repo), "--agent", "command",
                     "--agent-command", "true", "--no-deploy", "--no-progress"]
        assert main(autopilot) == 2 and "field 'agent'" in capsys.readouterr().err
        features = write_demo_features(tmp_path)
        autopilot[2] = str(features)
        assert main([*autopilot, "--model", "gpt-5"]) == 2 and "--model 'gpt-5'" in capsys.readouterr().err


@pytest.mark.slow
def test_the_autopilot_records_the_model_override_and_the_logical_agents_rule(
        store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from repo_support import make_repo

    repo = make_repo(tmp_path / "repo", {"test_ok.py": "def test_ok():\n    assert True\n",
                                         ".gitignore": "__pycache__/\n.pytest_cache/\n.coverage*\n"})
    features = tmp_path / "features.json"
    features.write_text(json.dumps([{"id": "mon", "description": "check disk space", "agent": "vps-monitor",
                                     "test_command": "python -m pytest -q test_ok.py"}]))
    base = ["build", "--autopilot", str(features), "--repo", str(repo), "--agent", "command", "--agent-command",
            "true", "--attempts", "1", "--no-deploy", "--offline", "--json", "--no-progress"]
    assert main(base) == 0, capsys.readouterr().err
    capsys.readouterr()
    assert main([*base, "--model", "opus"]) == 0, capsys.readouterr().err
    rows = store.query_df("SELECT tier, tier_reason FROM attempts ORDER BY started_at")
    assert list(zip(rows["tier"], rows["tier_reason"], strict=True)) == [
        ("haiku", "agent rule: vps-monitor -> haiku"), ("opus", "override")]
