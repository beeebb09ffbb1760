from __future__ import annotations

from pathlib import Path

import pytest
from store_support import filled_store, store_unchanged

from fibreflow.config import SandboxSettings, StoreSettings, load_settings
from fibreflow.errors import ConfigError, MissingEnvError
from fibreflow.yamlio import expand_env


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FIBREFLOW_DB")
    settings = load_settings()
    assert settings.db_path == Path("data/fibreflow.duckdb")
    assert settings.source is None


def test_env_overrides_store_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIBREFLOW_DB", str(tmp_path / "x.duckdb"))
    assert load_settings().db_path == tmp_path / "x.duckdb"


def test_config_file_from_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "ff.yaml"
    cfg.write_text("reports_dir: out\nstore:\n  lock_timeout_s: 5\n")
    monkeypatch.setenv("FIBREFLOW_CONFIG", str(cfg))
    settings = load_settings()
    assert settings.reports_dir == Path("out")
    assert settings.store.lock_timeout_s == 5
    assert settings.source == cfg


def test_unknown_key_names_key_file_and_line(tmp_path: Path) -> None:
    cfg = tmp_path / "ff.yaml"
    cfg.write_text("reports_dir: out\nstore:\n  lock_timeout_s: 5\n  lok_timeout: 3\n")
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert str(info.value) == f"{cfg}:4: unknown key 'store.lok_timeout'"


def test_bad_value_names_key(tmp_path: Path) -> None:
    cfg = tmp_path / "ff.yaml"
    cfg.write_text("store:\n  lock_timeout_s: soon\n")
    with pytest.raises(ConfigError, match=r"ff.yaml:2: store.lock_timeout_s"):
        load_settings(cfg)


def test_malformed_yaml_names_line(tmp_path: Path) -> None:
    cfg = tmp_path / "ff.yaml"
    cfg.write_text("store:\n  lock_timeout_s: 5\n bad: [unclosed\n")
    with pytest.raises(ConfigError, match=r"ff.yaml:3: malformed YAML"):
        load_settings(cfg)


def test_expand_env_names_missing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FF_HOST", "db.local")
    assert expand_env("postgresql://${FF_HOST}/x") == "postgresql://db.local/x"
    assert expand_env("${FF_NOPE:-fallback}") == "fallback"
    with pytest.raises(MissingEnvError, match="FF_NOPE_AT_ALL"):
        expand_env("http://${FF_NOPE_AT_ALL}/api")


@pytest.mark.parametrize("text, key, line, problem", [
    ("store:\n  batch_size: 0\n", "store.batch_size", 2, "greater than or equal to 1"),
    ("store:\n  lock_timeout_s: .inf\n", "store.lock_timeout_s", 2, "finite number"),
    ("sla:\n  check_timeout_s: -1\n", "sla.check_timeout_s", 2, "greater than 0"),
    ("models:\n  max_retries: 1000000\n", "models.max_retries", 2, "less than or equal to 20"),
    ("selection:\n  weights:\n    speed: .nan\n", "selection.weights.speed", 3, "finite number"),
    ("simulation:\n  e2b_concurrency_limits:\n    hobby: 0\n", "simulation.e2b_concurrency_limits.hobby", 3,
     "greater than or equal to 1"),
    ("autopilot:\n  command_timeout_s: 1000000000\n", "autopilot.command_timeout_s", 2, "less than or equal to 86400"),
])
def test_numbers_out_of_range_name_file_line_and_key(tmp_path: Path, text: str, key: str, line: int,
                                                     problem: str) -> None:
    cfg = tmp_path / "ff.yaml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    assert str(info.value).startswith(f"{cfg}:{line}: {key}: ") and problem in str(info.value)


def _cost_cli(capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``fibreflow cost analyze --json``: a command that loads the settings, then reads the store."""
    import fibreflow.cli as cli

    code = cli.main(["cost", "analyze", "--json"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("how", ["FIBREFLOW_CONFIG", "argument"])
def test_a_missing_config_file_is_named_and_the_store_left_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], how: str) -> None:
    store = filled_store(tmp_path / "fibreflow.duckdb")
    missing = tmp_path / "nowhere" / "ff.yaml"
    with store_unchanged(store.path):
        if how == "argument":
            with pytest.raises(ConfigError) as info:
                load_settings(missing)
            assert str(info.value) == f"{missing}: file not found" and info.value.path == str(missing)
        else:
            monkeypatch.setenv("FIBREFLOW_CONFIG", str(missing))
            with pytest.raises(ConfigError, match=f"^{missing}: file not found$"):
                load_settings()
            code, err = _cost_cli(capsys)
            assert code == 2 and f"{missing}: file not found" in err and "Traceback" not in err


@pytest.mark.parametrize("text", ["- reports_dir: out\n- store: {}\n", "just some words\n", "42\n"],
                         ids=["list", "text", "number"])
def test_a_config_that_is_not_a_mapping_is_named_and_the_store_left_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], text: str) -> None:
    store = filled_store(tmp_path / "fibreflow.duckdb")
    monkeypatch.chdir(tmp_path)  # found as ./fibreflow.yaml
    cfg = tmp_path / "fibreflow.yaml"
    cfg.write_text(text)
    with store_unchanged(store.path):
        with pytest.raises(ConfigError) as info:
            load_settings()
        assert str(info.value) == "fibreflow.yaml: the top level must be a mapping of settings"
        code, err = _cost_cli(capsys)
        assert code == 2 and "fibreflow.yaml: the top level must be a mapping of settings" in err


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing set yet\n", "---\n"],
                         ids=["empty", "blank-lines", "comment-only", "document-marker"])
def test_an_empty_config_file_means_the_defaults_and_the_store_is_left_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], text: str) -> None:
    store = filled_store(tmp_path / "fibreflow.duckdb")
    cfg = tmp_path / "ff.yaml"
    cfg.write_text(text)
    monkeypatch.setenv("FIBREFLOW_CONFIG", str(cfg))
    with store_unchanged(store.path):
        settings = load_settings()
        assert settings.source == cfg and settings.db_path == store.path
        assert (settings.store, settings.sandbox) == (StoreSettings(), SandboxSettings())  # the defaults
        code, err = _cost_cli(capsys)
        assert code == 0 and err == ""
