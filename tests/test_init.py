"""`fibreflow init`: the generated fibreflow.yaml is the settings models (every setting, default and
doc), the starter files work, .gitignore grows once, nothing is overwritten; .env is read, never written."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

import fibreflow.config as config
from fibreflow.build.features import FeatureList
from fibreflow.cli import main
from fibreflow.config import ENV_VARS, Settings, load_settings, settings_template
from fibreflow.errors import ConfigError


@pytest.fixture(autouse=True)
def _restore_environ(restored_environ: None) -> None:
    """Each test gets the environment back as it was."""


KEY_LINE = re.compile(r"^( *)(# )?([a-z_][a-z0-9_]*):(.*)$")  # a setting (commented: the machine's own)


def settings_fields(model: type[BaseModel], prefix: str = "") -> Iterator[tuple[str, str, Any]]:
    """(dotted key, description, default) of every leaf setting, read from the models."""
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            yield from settings_fields(info.annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", info.description or "", info.get_default(call_default_factory=True)


def test_the_template_has_every_setting_after_its_doc_and_loads_back_to_the_defaults(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FIBREFLOW_DB")  # the file alone, no override
    text = settings_template()
    lines = text.splitlines()
    stack: list[tuple[int, str]] = []  # (indent, name) of the sections a line is in
    found: dict[str, tuple[str, str]] = {}  # key -> (value text, the comment line before it)
    for i, line in enumerate(lines):
        match = KEY_LINE.match(line)
        if match is None:
            continue
        indent, key, value = len(match.group(1)), match.group(3), match.group(4).strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        found[".".join([name for _, name in stack] + [key])] = (value, lines[i - 1].strip())
        if not value:
            stack.append((indent, key))
    expected = list(settings_fields(Settings))
    assert len(expected) > 50
    for key, doc, _ in expected:
        assert key in found, f"{key} is not in the generated fibreflow.yaml"
        assert found[key][1] == f"# {' '.join(doc.split())}", key
    leaves = {k for k, _, _ in expected}
    sections = {k.rsplit(".", 1)[0] for k in leaves if "." in k}
    assert set(found) - leaves - sections == set()  # nothing that is not a setting

    path = tmp_path / "fibreflow.yaml"
    path.write_text(text)
    assert load_settings(path).model_copy(update={"source": None}) == Settings()
    data = yaml.safe_load(text)
    for key, _, default in expected:
        if key == "state_dir":  # the machine's own default stays commented out
            assert "state_dir" not in data
            continue
        node: Any = data
        for part in key.split("."):
            node = node[part]
        plain = json.loads(json.dumps(default.model_dump(mode="json") if isinstance(default, BaseModel) else
                                      {k: v.model_dump(mode="json") if isinstance(v, BaseModel) else v
                                       for k, v in default.items()} if isinstance(default, dict) else default,
                                      default=str))
        assert node == plain, key


def test_init_writes_the_starter_files_refuses_to_overwrite_and_grows_gitignore_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "mine"
    repo.mkdir()
    (repo / ".gitignore").write_text("node_modules/\n.env")  # no newline at the end, .env already there
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-never-written-1234")
    assert main(["init", "--repo", str(repo)]) == 0
    assert (repo / "fibreflow.yaml").read_text() == settings_template()
    features = FeatureList.load(repo / "features.json")  # what `fibreflow build features.json` reads
    assert [f.id for f in features.ordered()] == ["first-feature"]
    example = (repo / ".env.example").read_text()
    assert [line for line in example.splitlines() if line and not line.startswith("#")] == \
        [f"{name}=" for name in ENV_VARS]
    assert "sk-ant-never-written" not in example and not (repo / ".env").exists()
    assert (repo / ".gitignore").read_text() == ("node_modules/\n.env\n# fibreflow: the store, reports and local "
                                                 "secrets\n/data/fibreflow.duckdb*\n/reports/\n")
    capsys.readouterr()

    (repo / "fibreflow.yaml").write_text("autopilot:\n  attempts: 3\n")
    assert main(["init", "--repo", str(repo)]) == 2
    err = capsys.readouterr().err
    assert f"{repo / 'fibreflow.yaml'}, {repo / 'features.json'}, {repo / '.env.example'}" in err
    assert "--force" in err and (repo / "fibreflow.yaml").read_text() == "autopilot:\n  attempts: 3\n"

    gitignore = (repo / ".gitignore").read_text()
    assert main(["init", "--repo", str(repo), "--force"]) == 0
    assert main(["init", "--repo", str(repo), "--force"]) == 0
    assert (repo / ".gitignore").read_text() == gitignore  # never a line twice
    assert (repo / "fibreflow.yaml").read_text() == settings_template()
    assert main(["init", "--repo", str(tmp_path / "missing")]) == 2


def test_dotenv_supplies_keys_and_settings_and_the_environment_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "team.yaml"
    cfg.write_text("autopilot:\n  attempts: 4\n")
    (tmp_path / ".env").write_text(
        "# keys for this checkout\n"
        f"export FIBREFLOW_CONFIG={cfg}\n"
        "ANTHROPIC_API_KEY='sk-ant-from-dotenv'  # quoted, with a comment\n"
        "ANTHROPIC_BASE_URL=https://gateway.example.com/anthropic\n"
        "SLACK_BOT_TOKEN=xoxb-from-dotenv\n")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-from-the-environment")
    settings = load_settings()
    assert settings.source == cfg and settings.autopilot.attempts == 4  # FIBREFLOW_CONFIG came from .env
    assert os.environ["ANTHROPIC_API_KEY"] == "sk-ant-from-dotenv"
    assert os.environ["ANTHROPIC_BASE_URL"] == "https://gateway.example.com/anthropic"
    assert os.environ["SLACK_BOT_TOKEN"] == "xoxb-from-the-environment"
    assert config.env_source("ANTHROPIC_API_KEY") == f"{tmp_path / '.env'}:3"
    assert config.env_source("SLACK_BOT_TOKEN") == "environment"
    assert (tmp_path / ".env").read_text().count("\n") == 5  # read, never written


@pytest.mark.parametrize(("line", "says"), [
    ("ANTHROPIC_API_KEY sk-ant-secret-value", "expected KEY=VALUE"),
    ("ANTHROPIC_API_KEY='sk-ant-secret-value", "the quote that opens the value is never closed"),
    ("2KEY=sk-ant-secret-value", "expected KEY=VALUE"),
])
def test_a_malformed_dotenv_line_names_the_file_and_line_never_the_value(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], line: str, says: str) -> None:
    env = tmp_path / ".env"
    env.write_text(f"# ok\nFIBREFLOW_DB={tmp_path / 'x.duckdb'}\n{line}\n")
    with pytest.raises(ConfigError, match=rf"{env}:3: .*{says}") as caught:
        load_settings()
    assert "sk-ant-secret-value" not in str(caught.value)
    assert main(["config", "show"]) == 2
    err = capsys.readouterr().err
    assert f"{env}:3: " in err and says in err and "sk-ant-secret-value" not in err
