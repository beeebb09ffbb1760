"""Builds stack dependencies: in a plain build a feature's attempts start from the winning code of
the features it depends on (real git repo, real local sandboxes, real DuckDB rows)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from repo_support import git, make_repo

from fibreflow.cli import main

# `add` fixes calc.add; `dbl` writes double() on top of add(); `tri` needs both (via dbl)
AGENT = ("case \"$FIBREFLOW_FEATURE\" in "
         "add) printf 'def add(a, b):\\n    return a + b\\n' > calc.py ;; "
         "dbl) printf 'from calc import add\\n\\n\\ndef double(x):\\n    return add(x, x)\\n' > dbl.py ;; "
         "tri) printf 'from calc import add\\nfrom dbl import double\\n\\n\\ndef triple(x):\\n"
         "    return add(double(x), x)\\n' > tri.py ;; esac")
FEATURES = [
    {"id": "add", "description": "add() adds", "test_command": "python -m pytest -q test_calc.py"},
    {"id": "dbl", "description": "double() doubles", "dependencies": ["add"],
     "test_command": "python -m pytest -q test_dbl.py"},
    {"id": "tri", "description": "triple() triples", "dependencies": ["dbl"],
     "test_command": "python -m pytest -q test_tri.py"},
]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {
        "calc.py": "def add(a, b):\n    return 0\n",
        "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
        "test_dbl.py": "from dbl import double\n\n\ndef test_double():\n    assert double(4) == 8\n",
        "test_tri.py": "from tri import triple\n\n\ndef test_triple():\n    assert triple(2) == 6\n",
        ".gitignore": "__pycache__/\n.pytest_cache/\n.coverage*\n"})


@pytest.mark.slow
def test_dependents_start_from_their_dependencies_winning_code(store, repo: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    features = tmp_path / "features.json"
    features.write_text(json.dumps(FEATURES))
    code = main(["build", str(features), "--repo", str(repo), "--attempts", "2", "--profile", "quick",
                 "--agent-command", AGENT, "--json", "--no-progress"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0, out
    assert [(f["feature_id"], f["status"], f["passed"], f["attempts"]) for f in out["features"]] == [
        ("add", "passed", 2, 2), ("dbl", "passed", 2, 2), ("tri", "passed", 2, 2)]
    rows = store.query_df("SELECT feature_id, winner_attempt_id FROM features WHERE run_id = ?", [out["run_id"]])
    winners = dict(zip(rows.feature_id, rows.winner_attempt_id, strict=True))
    assert winners["add"] == out["features"][0]["winner"] and winners["add"] in out["features"][0]["passing_attempts"]
    diffs = store.query_df("SELECT feature_id, diff FROM attempts WHERE run_id = ?", [out["run_id"]])
    for fid, diff in zip(diffs["feature_id"], diffs["diff"], strict=True):
        # each attempt's diff is its own change on top of what it started from, as an autopilot commit
        assert {"add": "calc.py", "dbl": "dbl.py", "tri": "tri.py"}[fid] in diff
        assert ("calc.py" in diff) == (fid == "add") and ("dbl.py" in diff) == (fid == "dbl"), (fid, diff)
    assert (repo / "calc.py").read_text() == "def add(a, b):\n    return 0\n"  # the working tree is untouched
    assert git(repo, "status", "--porcelain") == ""


def test_winners_that_do_not_apply_together_skip_the_dependent(store, repo: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    agent = ("case \"$FIBREFLOW_FEATURE\" in "
             "left) printf 'def add(a, b):\\n    return a + b\\n' > calc.py ;; "
             "right) printf 'def add(a, b):\\n    return b + a\\n' > calc.py ;; esac")
    features = tmp_path / "features.json"
    features.write_text(json.dumps([
        {"id": "left", "description": "add, one way", "test_command": "python -m pytest -q test_calc.py"},
        {"id": "right", "description": "add, the other way", "test_command": "python -m pytest -q test_calc.py"},
        {"id": "both", "description": "needs both", "dependencies": ["left", "right"],
         "test_command": "python -m pytest -q test_calc.py"}]))
    code = main(["build", str(features), "--repo", str(repo), "--profile", "quick", "--agent-command", agent,
                 "--json", "--no-progress"])
    out = json.loads(capsys.readouterr().out)
    both = out["features"][2]
    assert code == 1 and both["status"] == "skipped" and both["attempts"] == 0
    assert "winning code of dependency 'right' does not apply on top of 'left'" in both["reason"]
