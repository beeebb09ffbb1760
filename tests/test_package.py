from __future__ import annotations

import inspect
import json

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
    assert facts["postgres_127.0.0.1:5432"] is True
    assert code == (0 if facts["offline_demo_ready"] else 1)
