"""``fibreflow sandbox run|reap|profiles`` and ``fibreflow bench sandbox`` through the real CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fibreflow.cli import main
from fibreflow.sandbox.state import janitor
from fibreflow.store import Store

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A settings file whose state directory is this test's own."""
    path = tmp_path / "fibreflow.yaml"
    path.write_text(f"state_dir: {tmp_path / 'state'}\n")
    monkeypatch.setenv("FIBREFLOW_CONFIG", str(path))
    return tmp_path / "state"


def _json(capsys: pytest.CaptureFixture[str]) -> dict:
    out = capsys.readouterr().out
    return json.loads(out)


def test_run_json_reports_the_command_and_exit_1_on_failure(config: Path, repo: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sandbox", "run", "--profile", "quick", "--repo", str(repo), "--json", "--",
                 "sh", "-c", "cat README.md; echo oops >&2; exit 3"])
    data = _json(capsys)
    assert code == 1
    assert {k: data[k] for k in ("exit_code", "stdout", "stderr", "killed_reason")} == \
        {"exit_code": 3, "stdout": "# demo\n", "stderr": "oops\n", "killed_reason": None}
    assert data["duration_s"] > 0 and data["isolation"] == "bwrap+overlay"
    janitor.drain()
    assert list((config / "sandboxes").iterdir()) == []
    row = Store().query_df("SELECT backend, profile, feature_id, outcome FROM sandbox_sessions").iloc[0]
    assert tuple(row) == ("local", "quick", "cli", "failed")


def test_run_exits_0_for_a_passing_command_and_prints_plainly(config: Path, repo: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sandbox", "run", "--repo", str(repo), "--", "echo hello from $(hostname)"]) == 0
    out, err = capsys.readouterr()
    assert out == "hello from sandbox\n"
    assert "exit 0" in err and "python-tests" in err


def test_a_killed_command_reports_its_reason(config: Path, repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    timeout = 0.5
    code = main(["sandbox", "run", "--repo", str(repo), "--timeout", str(timeout), "--json", "--", "sleep", "30"])
    data = _json(capsys)
    assert code == 1 and data["killed_reason"] == "timeout" and data["duration_s"] < timeout * 3 + 5


@pytest.mark.parametrize("argv, message", [
    (["sandbox", "run", "--"], "no command given"),
    (["sandbox", "run", "--profile", "huge", "--", "true"], "unknown sandbox profile 'huge' (known: quick"),
    (["sandbox", "run", "--backend", "docker", "--", "true"], "--backend docker: unknown (known: local, e2b)"),
    (["sandbox", "run", "--repo", "/nonexistent/repo", "--", "true"], "--repo /nonexistent/repo: not a directory"),
])
def test_usage_errors_exit_2_and_name_the_option(config: Path, repo: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str], argv: list[str],
                                                 message: str) -> None:
    monkeypatch.chdir(repo)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_reap_and_profiles_commands(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sandbox", "reap", "--json"]) == 0
    assert _json(capsys)["sandboxes"] == []
    assert main(["sandbox", "profiles", "--json"]) == 0
    profiles = _json(capsys)
    assert set(profiles) >= {"quick", "python-tests", "build", "networked"}
    assert profiles["networked"]["network"] is True and profiles["quick"]["env_passthrough"] == []


def test_bench_sandbox_json_has_the_issue_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "sandbox", "--json", "--iterations", "5", "--warmup", "1",
                 "--small-files", "10", "--large-files", "300"]) == 0
    data = _json(capsys)
    for size in ("small", "large"):
        assert 0 < data[size]["p50_ms"] <= data[size]["p95_ms"]  # the goals are the benchmark's to judge
    assert data["leaks"] == {"mounts": 0, "directories": 0, "processes": 0, "cgroups": 0}
    assert data["isolation"] == "bwrap+overlay"
