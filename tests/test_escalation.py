"""The tier ladder: start at the routed or pinned tier, one tier up while no attempt passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from repo_support import make_repo

from fibreflow.build.escalation import TierLadder
from fibreflow.build.features import FeatureList
from fibreflow.cli import main
from fibreflow.errors import ConfigError
from fibreflow.models.routing import ModelRouter

# only the opus tier writes mul(); every other tier leaves the repository as it was
OPUS_ONLY = ('[ "$FIBREFLOW_MODEL_TIER" = opus ] && '
             "printf 'def mul(a, b):\\n    return a * b\\n' >> calc.py; true")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {
        "calc.py": "def add(a, b):\n    return a + b\n",
        "test_mul.py": "from calc import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n"})


def _run(capsys: pytest.CaptureFixture[str], repo: Path, tmp_path: Path, features: list[dict],
         *extra: str) -> tuple[int, dict]:
    spec = tmp_path / "features.json"
    spec.write_text(json.dumps(features))
    code = main(["build", str(spec), "--repo", str(repo), "--attempts", "2", "--profile", "quick",
                 "--agent-command", OPUS_ONLY, "--json", "--no-progress", *extra])
    return code, json.loads(capsys.readouterr().out)


MUL = {"id": "mul", "description": "mul() multiplies", "tier": "haiku",
       "test_command": "python -m pytest -q test_mul.py"}


def test_a_failing_tier_climbs_to_the_next_until_one_passes(capsys: pytest.CaptureFixture[str], repo: Path,
                                                            tmp_path: Path, store) -> None:
    code, out = _run(capsys, repo, tmp_path, [MUL], "--escalate")
    assert code == 0 and out["passed"] is True
    feature = out["features"][0]
    assert feature["solved_tier"] == "opus" and feature["attempts"] == 6
    rows = store.query_df("SELECT iteration, tier, status FROM attempts WHERE run_id = ? "
                          "ORDER BY iteration, attempt_id", [out["run_id"]])
    assert list(rows.itertuples(index=False, name=None)) == [
        (1, "haiku", "failed"), (1, "haiku", "failed"), (2, "sonnet", "failed"), (2, "sonnet", "failed"),
        (3, "opus", "passed"), (3, "opus", "passed")]


def test_the_ceiling_stops_the_climb(capsys: pytest.CaptureFixture[str], repo: Path, tmp_path: Path) -> None:
    code, out = _run(capsys, repo, tmp_path, [MUL], "--escalate", "sonnet")
    assert code == 1 and out["passed"] is False
    assert out["features"][0]["attempts"] == 4 and out["features"][0]["solved_tier"] is None


def test_without_escalation_a_failing_feature_stays_on_its_tier(capsys: pytest.CaptureFixture[str], repo: Path,
                                                                tmp_path: Path) -> None:
    code, out = _run(capsys, repo, tmp_path, [MUL])
    assert code == 1 and out["features"][0]["attempts"] == 2


def test_unpinned_features_start_at_the_routed_tier() -> None:
    features = FeatureList.from_data([{"id": "a", "description": "rename a variable"},
                                      {"id": "b", "description": "design the architecture", "tier": "sonnet"}])
    started = TierLadder().start(features)
    routed = ModelRouter().classify_request(features.get("a").task_description()).tier
    assert [f.tier for f in started] == [routed, "sonnet"]
    assert [f.id for f in started] == ["a", "b"]


def test_an_unknown_ceiling_is_a_usage_error(capsys: pytest.CaptureFixture[str], repo: Path,
                                             tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'gpt' is not a tier"):
        TierLadder("gpt")
    spec = tmp_path / "features.json"
    spec.write_text(json.dumps([MUL]))
    assert main(["build", str(spec), "--repo", str(repo), "--agent-command", "true", "--escalate", "gpt"]) == 2
    assert "escalation ceiling 'gpt'" in capsys.readouterr().err


def test_the_autopilot_build_step_climbs_the_ladder(store, repo: Path) -> None:
    from fibreflow.agents.command import CommandAgent
    from fibreflow.autopilot.build import AgentFactory, run_feature
    from fibreflow.autopilot.options import AutopilotOptions
    from fibreflow.build.features import Feature

    agent = CommandAgent(OPUS_ONLY)
    feature = Feature(id="mul", description="mul() multiplies", test_command="python -m pytest -q test_mul.py",
                      tier="sonnet")
    agents = AgentFactory(AutopilotOptions(agent=agent.name), store=store, given=agent)
    detail = run_feature(store, repo, feature, goal=None, runner_run_id="r-ladder", agents=agents, attempts=2,
                         workers=None, backend="local", profile="quick", iterations=1, escalate_to="opus")
    assert detail["status"] == "passed" and detail["solved_tier"] == "opus" and detail["attempts"] == 4
    plain = run_feature(store, repo, feature, goal=None, runner_run_id="r-plain", agents=agents, attempts=2,
                        workers=None, backend="local", profile="quick", iterations=1)
    assert plain["status"] == "failed" and plain["attempts"] == 2
