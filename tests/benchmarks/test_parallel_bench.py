"""The parallel benchmark on the e2b backend: with no hosts configured it serves its own sandboxes."""

from __future__ import annotations

import json

import pytest

from fibreflow.cli import main


@pytest.mark.slow
def test_e2b_runs_against_a_server_it_starts_and_reports_the_call_overhead(
        capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("e2b")
    args = ["bench", "parallel", "--json", "--backend", "e2b", "--attempts", "2", "--calls", "1",
            "--latency", "0.05"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"wall_1_s", "wall_15_s", "ratio", "attempts", "workers", "model", "backend", "goal_ratio"} <= set(result)
    assert (result["backend"], result["attempts"]) == ("e2b", 2)
    assert result["call_ms_local"] > 0 and result["call_ms_e2b"] > 0
    assert result["per_call_overhead_ms"] == pytest.approx(result["call_ms_e2b"] - result["call_ms_local"], abs=0.02)
