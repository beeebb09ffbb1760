"""Preflight: the real anthropic SDK asks the scripted server's Models API, the real slack_sdk asks
the local Slack's auth.test; a failure exits 2 before any attempt starts, naming what is at fault."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from repo_support import demo_repo_and_features
from store_support import store_unchanged

from fibreflow.build.preflight import preflight
from fibreflow.cli import main
from fibreflow.config import load_settings
from fibreflow.models.scripted import ScriptedServer
from fibreflow.testing.slack_receiver import SlackReceiver

KEY = "sk-ant-api03-" + "k5" * 40 + "-PREFLIGHT"


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **sections: object) -> None:
    config = tmp_path / "fibreflow.yaml"
    config.write_text(json.dumps(sections))  # JSON is YAML
    monkeypatch.setenv("FIBREFLOW_CONFIG", str(config))


def test_models_api_answers_like_the_api_through_the_real_sdk() -> None:
    import anthropic

    with ScriptedServer(api_key=KEY, models=["claude-sonnet-5-5"]) as server:
        client = anthropic.Anthropic(api_key=KEY, base_url=server.base_url, max_retries=0)
        assert client.models.retrieve("claude-sonnet-5-5").id == "claude-sonnet-5-5"
        assert [m.id for m in client.models.list()] == ["claude-sonnet-5-5"]
        with pytest.raises(anthropic.NotFoundError):
            client.models.retrieve("claude-nonexistent-9")
        wrong = anthropic.Anthropic(api_key="sk-ant-wrong-key-0000", base_url=server.base_url, max_retries=0)
        with pytest.raises(anthropic.AuthenticationError):
            wrong.models.retrieve("claude-sonnet-5-5")
        assert server.request_count == 0  # Models requests consume no script turn nor injected error


def test_preflight_names_the_refused_key_and_the_missing_model(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with ScriptedServer(api_key=KEY) as server:
        _config(tmp_path, monkeypatch, models={"base_url": server.base_url,
                                               "tiers": {"opus": "claude-opus-9-9"}})
        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        checks = preflight(load_settings(), models=True)
        failed = [c for c in checks if not c.ok]
        assert [c.subject for c in failed] == ["claude-opus-9-9"]
        assert "models.tiers.opus" in failed[0].detail
        assert {c.subject for c in checks if c.ok} >= {"ANTHROPIC_API_KEY", "claude-haiku-5-5", "claude-sonnet-5-5"}

        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-wrong-" + "x" * 40)
        checks = preflight(load_settings(), models=True)
        assert [(c.ok, c.subject) for c in checks] == [(False, "ANTHROPIC_API_KEY")]
        assert "wrong-" not in checks[0].detail  # the key itself is never shown


def test_build_with_a_refused_key_exits_2_before_any_attempt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    repo, features = demo_repo_and_features(tmp_path)
    db = Path(tmp_path / "fibreflow.duckdb")
    main(["build", "warm up the store", "--repo", str(repo), "--agent-command", "true", "--no-progress"])
    capsys.readouterr()
    with ScriptedServer({"default": "Done."}, api_key=KEY) as server:
        _config(tmp_path, monkeypatch, models={"base_url": server.base_url})
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-refused-" + "y" * 40)
        with store_unchanged(db, check_bytes=False):
            code = main(["build", str(features), "--repo", str(repo), "--agent", "claude", "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and "ANTHROPIC_API_KEY is not accepted" in err and "refused-" not in err
        assert server.request_count == 0  # no Messages request: nothing was started

        monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
        _config(tmp_path, monkeypatch, models={"base_url": server.base_url, "tiers": {"haiku": "claude-haiku-0-1"}})
        with store_unchanged(db, check_bytes=False):
            code = main(["build", str(features), "--repo", str(repo), "--agent", "claude", "--no-progress"])
        assert code == 2 and "'claude-haiku-0-1' (models.tiers.haiku) does not exist" in capsys.readouterr().err
        assert server.request_count == 0


def test_offline_preflight_asks_the_scripted_server_never_the_network(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _config(tmp_path, monkeypatch, models={"base_url": "http://127.0.0.1:9", "tiers": {"opus": "claude-opus-0-0"}})
    checks = preflight(load_settings(), models=True, offline=True)
    assert [c.subject for c in checks if not c.ok] == ["claude-opus-0-0"]
    assert "scripted model (offline)" in checks[-1].detail


def test_doctor_live_checks_slack_auth_and_the_e2b_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("e2b")
    from fibreflow.sandbox.e2b_pool import SandboxPool
    from fibreflow.sandbox.e2b_server import E2BServer
    from fibreflow.sandbox.profiles import load_profile

    e2b_key = "e2b_" + "1" * 40
    pool = SandboxPool(profile=load_profile("quick"), state_dir=tmp_path / "state")
    with SlackReceiver(token="xoxb-right-token") as slack, E2BServer(pool, api_key=e2b_key) as e2b:
        _config(tmp_path, monkeypatch, slack={"base_url": slack.api_base_url},
                sandbox={"backend": "e2b", "e2b_api_url": e2b.url})
        monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-right-token")
        monkeypatch.setenv("E2B_API_KEY", e2b_key)
        code = main(["doctor", "--live", "--offline", "--json"])
        out = json.loads(capsys.readouterr().out)
        by_name = {c["name"]: c for c in out["preflight"]}
        assert by_name["slack"]["ok"] and by_name["e2b key"]["ok"] and by_name["anthropic key"]["ok"], by_name
        assert code in (0, 1)  # the preflight passed; 1 only when this machine cannot run the demo

        monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-wrong-token")
        monkeypatch.setenv("E2B_API_KEY", "e2b_" + "2" * 40)
        code = main(["doctor", "--live", "--offline"])
        captured = capsys.readouterr()
        assert code == 2 and "SLACK_BOT_TOKEN" in captured.err and "E2B_API_KEY" in captured.err
        assert "invalid_auth" in captured.out and "rejected the API key in E2B_API_KEY" in captured.out
        assert "xoxb-wrong" not in captured.out + captured.err and "2222222222" not in captured.out + captured.err


def test_an_autopilot_run_is_preflighted_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    repo, features = demo_repo_and_features(tmp_path)
    with ScriptedServer({"default": "Done."}, api_key=KEY) as server:
        _config(tmp_path, monkeypatch, models={"base_url": server.base_url})
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-refused-" + "w" * 40)
        code = main(["build", "--autopilot", str(features), "--repo", str(repo), "--no-deploy", "--no-progress"])
        assert code == 2 and "ANTHROPIC_API_KEY is not accepted" in capsys.readouterr().err
        assert server.request_count == 0
    from fibreflow.store import Store

    assert Store(tmp_path / "fibreflow.duckdb").scalar("SELECT count(*) FROM autopilot_runs") == 0
