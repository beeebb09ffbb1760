from __future__ import annotations

import inspect
import json
import os
import shutil
import socket
from pathlib import Path

import pytest

import fibreflow
from fibreflow import errors
from fibreflow.cli import main


def test_all_is_sorted_and_complete() -> None:
    assert fibreflow.__all__ == sorted(fibreflow.__all__)
    for name in fibreflow.__all__:
        assert hasattr(fibreflow, name), name


def test_every_error_descends_from_the_root_and_is_drawn_in_the_docstring() -> None:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, Exception) and c.__module__ == errors.__name__]
    assert len(classes) >= 10
    for cls in classes:
        assert issubclass(cls, errors.FibreflowError)
        assert cls.__name__ in (errors.__doc__ or ""), f"{cls.__name__} missing from the tree"
    assert sorted(errors.__all__) == sorted(c.__name__ for c in classes)


def test_cli_without_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: fibreflow" in capsys.readouterr().out


def test_doctor_json_reports_secrets_as_set_never_their_values(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-secret-value-123")
    code = main(["doctor", "--json"])
    out = capsys.readouterr().out
    facts = json.loads(out)
    assert facts["ANTHROPIC_API_KEY"] == "set"
    assert facts["E2B_API_KEY"] == "not set"
    assert "sk-ant-secret-value-123" not in out
    # every fact agrees with a check made here, independently of the doctor's code
    with socket.create_connection(("127.0.0.1", 5432), timeout=3):  # CI starts PostgreSQL; down is a failure
        pass
    assert facts["postgres_127.0.0.1:5432"] is True
    for tool in ("bwrap", "git", "chromium"):  # CI installs all three
        found = shutil.which(tool)
        assert found is not None, f"{tool} is not installed on this machine"
        assert facts[tool] == found
    assert facts["python_kernel"] is True
    assert facts["store"] == os.environ["FIBREFLOW_DB"]
    assert facts["offline_demo_ready"] is True and code == 0


def test_doctor_exits_1_when_git_is_missing(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no git, no bwrap, no chromium
    code = main(["doctor", "--json"])
    facts = json.loads(capsys.readouterr().out)
    assert (facts["git"], facts["bwrap"], facts["offline_demo_ready"], code) == (None, None, False, 1)
