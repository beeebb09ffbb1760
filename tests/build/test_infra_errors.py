"""Infrastructure errors are not test failures: the real anthropic SDK against the scripted server
failing every request; attempts end ``error`` with their kind, no test runs, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from repo_support import demo_repo_and_features

from fibreflow.agents.claude import ClaudeAgent
from fibreflow.build.features import FeatureList
from fibreflow.build.runner import ParallelRunner
from fibreflow.cli import main
from fibreflow.config import ModelsSettings, Settings
from fibreflow.models.client import LLMClient
from fibreflow.models.scripted import ScriptedServer

KEY = "sk-ant-api03-" + "e4" * 40 + "-INFRA"


@pytest.mark.slow
def test_a_build_whose_every_attempt_hit_model_errors_exits_2_and_counts_them_apart(
        store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    repo, features = demo_repo_and_features(tmp_path)
    with ScriptedServer({"default": "Done.", "errors": [{"status": 529, "times": 1000}]}) as server:
        config = tmp_path / "fibreflow.yaml"
        config.write_text(json.dumps({"models": {"base_url": server.base_url, "max_retries": 1,
                                                 "backoff_base_s": 0.01, "backoff_max_s": 0.01}}))
        monkeypatch.setenv("FIBREFLOW_CONFIG", str(config))
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        code = main(["build", str(features), "--repo", str(repo), "--agent", "claude", "--attempts", "2",
                     "--json", "--no-progress"])
        captured = capsys.readouterr()
        out = json.loads(captured.out)
        assert code == 2, captured.err
        assert out["attempt_counts"] == {"passed": 0, "failed": 0, "errors": 2}
        feature = out["features"][0]
        assert (feature["status"], feature["failed"], feature["errors"]) == ("error", 0, 2)
        assert "model errors, no test ran" in feature["reason"] and "529" in feature["reason"]
        assert "every attempt ended on an infrastructure error (model)" in captured.err
        assert server.request_count == 4  # two tries per attempt, and no second round on the same errors
    rows = store.query_df("SELECT status, error_kind, exit_code, tests_failed, error FROM attempts").to_dict("records")
    assert [(r["status"], r["error_kind"]) for r in rows] == [("error", "model")] * 2
    assert all(r["exit_code"] is None or r["exit_code"] != r["exit_code"] for r in rows)  # the tests never ran
    assert all("overloaded" in r["error"] for r in rows) and KEY not in str(rows)


def test_a_refused_key_is_an_auth_error_and_is_not_retried(store, tmp_path: Path) -> None:
    repo, features = demo_repo_and_features(tmp_path)
    with ScriptedServer({"default": "Done."}, api_key=KEY) as server:
        settings = Settings(models=ModelsSettings(base_url=server.base_url, max_retries=4, backoff_base_s=0.01))
        client = LLMClient(settings=settings, store=store, api_key="sk-ant-api03-refused-" + "z" * 40)
        with ClaudeAgent(client=client) as agent:
            runner = ParallelRunner(store, repo, agent=agent, attempts=2, iterations=2, profile="quick")
            result = runner.run(FeatureList.load(features))
        assert server.request_count == 2  # one try per attempt: a 401 is never retried, nor another round
    feature = result.features[0]
    assert feature.status == "error" and result.only_infrastructure_errors
    assert [a.error_kind for a in feature.attempts] == ["auth", "auth"]
    assert all(a.status == "error" and a.tests_failed == 0 and a.exit_code is None for a in feature.attempts)
    assert "auth errors" in (feature.reason or "") and "ANTHROPIC_API_KEY" in (feature.reason or "")
    stored = store.query_df("SELECT status, reason FROM features WHERE run_id = ?", [result.run_id]).iloc[0]
    assert stored.status == "error" and "auth errors" in stored.reason
    calls = store.query_df("SELECT status FROM llm_calls").status.tolist()
    assert calls == ["client_error", "client_error"]


def test_a_failed_test_is_not_an_error(store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo, features = demo_repo_and_features(tmp_path)
    code = main(["build", str(features), "--repo", str(repo), "--agent-command", "true", "--profile", "quick",
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 1  # the tests judged the attempt: a failed build, not a configuration problem
    assert "1 attempts: 0 passed, 1 failed their tests, 0 ended on errors" in out
    assert "failed  0/1     1       0" in out
