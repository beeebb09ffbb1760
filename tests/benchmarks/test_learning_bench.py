"""The learning benchmark's demo scenario: the real autopilot loop, twice, with the scripted model."""

from __future__ import annotations

import json

import pytest

from fibreflow.cli import main


def test_second_run_starts_from_the_first_runs_knowledge_base(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "learning", "--json", "--attempts", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "scripted" and result["scenario"] == "demo"
    first, second = result["runs"]
    # the scripted model's first 'units' draft fails; run 1 learns it, run 2 is shown it up front
    assert first["knowledge_base_patterns_at_start"] == 0 and second["knowledge_base_patterns_at_start"] >= 1
    assert first["failed"][0] >= 1 and first["success_rate"][0] < 1.0 and len(first["success_rate"]) == 2
    assert second["success_rate"] == [1.0] and result["success_rate"] == second["success_rate"]
    assert first["repeat_failure_rate"][0] == 0.0 and result["repeat_failure_rate"] == [0.0]


def test_bad_attempts_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "learning", "--attempts", "0", "--json"]) == 2
    assert "--attempts" in capsys.readouterr().err
