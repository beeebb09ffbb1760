"""`fibreflow config show`: every effective setting with where it came from; secrets as set/unset only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fibreflow.config as config
from fibreflow.cli import main

SECRETS = ("sk-ant-environment-secret-1", "xoxb-dotenv-secret-2", "https://hooks.slack.com/services/T0/B0/dotenv3")


@pytest.fixture(autouse=True)
def _restore_environ(restored_environ: None) -> None:
    """Each test gets the environment back as it was."""


def line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_each_setting_names_its_source_and_secrets_show_only_whether_they_are_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "fibreflow.yaml"
    cfg.write_text("# team settings\nmodels:\n  max_retries: 2\nautopilot:\n  staging_command: ./deploy.sh staging\n"
                   "  attempts: 6\n")
    env = tmp_path / ".env"
    env.write_text(f"\nFIBREFLOW_DB={tmp_path / 'team.duckdb'}\nSLACK_BOT_TOKEN={SECRETS[1]}\n"
                   f"SLACK_WEBHOOK_URL={SECRETS[2]}\nANTHROPIC_API_KEY=sk-ant-loses-to-the-environment\n"
                   "E2B_API_KEY=\n")  # empty, as in .env.example: not set
    monkeypatch.setenv("FIBREFLOW_CONFIG", str(cfg))
    monkeypatch.delenv("FIBREFLOW_DB")
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRETS[0])
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "https://gateway.example.com")

    assert main(["config", "show", "--json"]) == 0
    out = capsys.readouterr().out
    shown = json.loads(out)
    rows = {r["key"]: r for r in shown["settings"]}
    assert shown["config_file"] == str(cfg) and shown["env_file"] == str(env)
    assert rows["models.max_retries"]["value"] == 2
    assert rows["models.max_retries"]["source"] == f"{cfg}:{line_of(cfg, 'max_retries')}"
    assert rows["autopilot.attempts"]["source"] == f"{cfg}:{line_of(cfg, 'attempts')}"
    assert rows["autopilot.staging_command"]["value"] == "./deploy.sh staging"
    assert rows["autopilot.production_command"] == {"key": "autopilot.production_command", "value": None,
                                                    "source": "default", "secret": False}
    assert rows["db_path"] == {"key": "db_path", "value": str(tmp_path / "team.duckdb"),
                               "source": f"{env}:2 (FIBREFLOW_DB)", "secret": False}
    assert rows["$ANTHROPIC_API_KEY"] == {"key": "$ANTHROPIC_API_KEY", "value": "set", "source": "environment",
                                          "secret": True}
    assert rows["$SLACK_BOT_TOKEN"]["value"] == "set" and rows["$SLACK_BOT_TOKEN"]["source"] == f"{env}:3"
    assert rows["$E2B_API_KEY"] == {"key": "$E2B_API_KEY", "value": "unset", "source": "unset", "secret": True}
    assert rows["$ANTHROPIC_BASE_URL"]["value"] == "https://gateway.example.com"
    assert set(rows) >= {f"${name}" for name in config.ENV_VARS}
    assert not any(secret in out for secret in SECRETS) and "loses-to-the-environment" not in out

    assert main(["config", "show"]) == 0
    text = capsys.readouterr().out
    assert f"[{cfg}:{line_of(cfg, 'attempts')}]" in text and "[default]" in text and f"[{env}:3]" in text
    assert not any(secret in text for secret in SECRETS)


def test_without_a_file_everything_is_a_default(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["config", "show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    sources = {r["source"] for r in shown["settings"] if not r["key"].startswith(("$", "db_path"))}
    assert shown["config_file"] is None and sources == {"default"}
    db = next(r for r in shown["settings"] if r["key"] == "db_path")
    assert db["source"] == "environment (FIBREFLOW_DB)"  # the test's own store, set in the environment
