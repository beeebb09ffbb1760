"""The SLA gate guards agents: a feature's ``needs_data`` SLAs are checked (real file-age checks,
real DuckDB rows) before its attempts, under the policy warn, abort or ask."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from repo_support import make_repo
from store_support import store_unchanged

from fibreflow.build.features import FeatureList
from fibreflow.cli import main
from fibreflow.sla.config import load_sla_config
from fibreflow.sla.feature_gate import FreshDataGate
from fibreflow.store import Store

FIX = "printf 'def add(a, b):\\n    return a + b\\n' > calc.py"


def _setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    """A repo, an SLA file (``images_fresh`` violated: its newest file is 10 minutes old; ``reports_fresh``
    met) in force, and a feature list: ``stale`` needs the images, ``ok`` needs the reports."""
    repo = make_repo(tmp_path / "repo", {
        "calc.py": "def add(a, b):\n    return 0\n",
        "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
        ".gitignore": "__pycache__/\n.pytest_cache/\n.coverage*\n"})
    for name, age in (("images", 600), ("reports", 1)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "newest.dat").write_text("x")
        then = time.time() - age
        os.utime(folder / "newest.dat", (then, then))
    slas = tmp_path / "slas.yaml"
    slas.write_text(f"slas: {{images_fresh: 60, reports_fresh: 3600}}\nchecks:\n"
                    f"  images_fresh: {{type: file_age, path: '{tmp_path / 'images'}'}}\n"
                    f"  reports_fresh: {{type: file_age, path: '{tmp_path / 'reports'}'}}\n")
    config = tmp_path / "fibreflow.yaml"
    config.write_text(json.dumps({"sla": {"config_path": str(slas)}}))
    monkeypatch.setenv("FIBREFLOW_CONFIG", str(config))
    features = tmp_path / "features.json"
    features.write_text(json.dumps([
        {"id": "stale", "description": "uses the images", "needs_data": ["images_fresh"],
         "test_command": "python -m pytest -q test_calc.py"},
        {"id": "after", "description": "builds on stale", "dependencies": ["stale"],
         "test_command": "python -m pytest -q test_calc.py"},
        {"id": "ok", "description": "uses the reports", "needs_data": ["reports_fresh"],
         "test_command": "python -m pytest -q test_calc.py"}], indent=1))
    return repo, slas, features


def _build(repo: Path, features: Path, policy: str) -> list[str]:
    return ["build", str(features), "--repo", str(repo), "--profile", "quick", "--agent-command", FIX,
            "--data-policy", policy, "--json", "--no-progress"]


@pytest.mark.slow
def test_abort_blocks_the_feature_and_records_why(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    repo, _, features = _setup(tmp_path, monkeypatch)
    code = main(_build(repo, features, "abort"))
    out = json.loads(capsys.readouterr().out)
    by_id = {f["feature_id"]: f for f in out["features"]}
    assert code == 1
    assert (by_id["stale"]["status"], by_id["stale"]["attempts"]) == ("blocked", 0)
    assert by_id["stale"]["data_gate"]["decision"] == "aborted" and "images_fresh: violation" in by_id["stale"]["reason"]
    assert by_id["after"]["status"] == "skipped" and by_id["after"]["reason"] == "dependency 'stale' was blocked"
    assert by_id["ok"]["status"] == "passed" and by_id["ok"]["data_gate"] == {
        "decision": "fresh", "policy": "abort", "violations": []}
    rows = store.query_df("SELECT feature_id, status, data_gate, data_violations, reason FROM features "
                          "WHERE run_id = ? ORDER BY feature_id", [out["run_id"]]).to_dict("records")
    stale = next(r for r in rows if r["feature_id"] == "stale")
    assert (stale["status"], stale["data_gate"]) == ("blocked", "aborted")
    assert json.loads(stale["data_violations"])[0].startswith("images_fresh: violation")
    checks = store.query_df("SELECT name, status FROM sla_checks ORDER BY name").to_dict("records")
    assert checks == [{"name": "images_fresh", "status": "violation"}, {"name": "reports_fresh", "status": "ok"}]


@pytest.mark.slow
def test_warn_goes_ahead_and_ask_without_a_terminal_aborts(store: Store, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    repo, slas, features = _setup(tmp_path, monkeypatch)
    assert main(_build(repo, features, "warn")) == 0
    out = json.loads(capsys.readouterr().out)
    stale = out["features"][0]
    assert stale["status"] == "passed" and stale["data_gate"]["decision"] == "warned"
    assert stale["data_gate"]["violations"][0].startswith("images_fresh: violation")

    assert main(_build(repo, features, "ask")) == 1  # pytest's stdin is no terminal
    stale = json.loads(capsys.readouterr().out)["features"][0]
    assert stale["status"] == "blocked" and stale["data_gate"]["decision"] == "aborted"
    assert "no terminal to ask on" in stale["reason"]

    questions: list[str] = []
    gate = FreshDataGate(load_sla_config(slas), store=store, policy="ask",
                         ask=lambda q: questions.append(q) or True)
    decision = gate(FeatureList.load(features).get("stale"))
    assert (decision.proceed, decision.decision) == (True, "proceeded")
    assert questions[0].endswith("Proceed? (y/n)") and "images_fresh" in questions[0]


def test_an_unknown_sla_name_exits_2_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    repo, slas, features = _setup(tmp_path, monkeypatch)
    main(["build", "warm up the store", "--repo", str(repo), "--agent-command", "true", "--no-progress"])
    capsys.readouterr()
    data = json.loads(features.read_text())
    data[2]["needs_data"] = ["reports_fresh", "orders_fresh"]
    features.write_text(json.dumps(data, indent=1))
    with store_unchanged(tmp_path / "fibreflow.duckdb", check_bytes=False):
        assert main(_build(repo, features, "abort")) == 2
    err = capsys.readouterr().err
    line = [i for i, text in enumerate(features.read_text().splitlines(), 1) if '"needs_data"' in text][-1]
    assert f"{features}:{line}: feature 'ok': field 'needs_data': unknown SLA 'orders_fresh'" in err
    assert str(slas) in err


@pytest.mark.slow
def test_ask_on_a_terminal_takes_the_persons_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pty
    import subprocess
    import sys

    repo, _, features = _setup(tmp_path, monkeypatch)
    main_fd, child_fd = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "fibreflow.cli", *_build(repo, features, "ask")[:-2],
                             "--no-progress"], stdin=child_fd, stdout=subprocess.PIPE, stderr=child_fd,
                            env=dict(os.environ))
    os.close(child_fd)
    seen = b""
    while b"Proceed? (y/n)" not in seen:  # the question, or the end of the output (EOF raises OSError)
        try:
            seen += os.read(main_fd, 4096)
        except OSError:
            break
    assert b"Proceed? (y/n)" in seen and b"images_fresh" in seen
    os.write(main_fd, b"y\n")
    out, _ = proc.communicate()
    os.close(main_fd)
    assert proc.returncode == 0, out.decode()
    stale = Store(os.environ["FIBREFLOW_DB"]).query_df(
        "SELECT status, data_gate FROM features WHERE feature_id = 'stale'").iloc[0]
    assert (stale.status, stale.data_gate) == ("passed", "proceeded")


@pytest.mark.slow
def test_the_autopilot_gates_its_features_too(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    repo, _, features = _setup(tmp_path, monkeypatch)
    code = main(["build", "--autopilot", str(features), "--repo", str(repo), "--agent", "command",
                 "--agent-command", FIX, "--attempts", "1", "--no-deploy", "--offline", "--data-policy", "abort",
                 "--json", "--no-progress"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and "blocked: data gate (abort): aborted: images_fresh: violation" in out["error"]
    row = store.query_df("SELECT status, data_gate FROM features WHERE feature_id = 'stale'").iloc[0]
    assert (row.status, row.data_gate) == ("blocked", "aborted")
