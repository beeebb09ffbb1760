"""The interrupt benchmark: a real build with sandboxed `sleep 1000` attempts gets one SIGINT."""

from __future__ import annotations

import json
import shutil

import pytest

from fibreflow.cli import main


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
@pytest.mark.slow
def test_reports_its_keys_and_the_build_stopped(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "interrupt", "--json", "--attempts", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert {"attempts", "sigint_to_exit_s", "exit_code", "left_processes", "run_status"} <= set(result)
    assert result["attempts"] == 2 and result["exit_code"] == 130 and result["left_processes"] == 0
    assert result["run_status"] == "cancelled" and result["traceback"] is False
    assert result["attempts_stored_cancelled"] == 2
    assert 0 < result["sigint_to_exit_s"] < 60  # it stopped at all, well before the sleeps' 1000 s


def test_bad_attempts_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "interrupt", "--attempts", "0", "--json"]) == 1
    assert "--attempts" in capsys.readouterr().err
