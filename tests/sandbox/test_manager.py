"""SandboxManager over the real local backend, with sessions recorded in a real DuckDB file."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from local_support import tight
from repo_support import make_repo

from fibreflow.errors import ConfigError, SandboxError
from fibreflow.sandbox.backends import BACKENDS, get_backend
from fibreflow.sandbox.base import Sandbox
from fibreflow.sandbox.local import LocalBackend
from fibreflow.sandbox.manager import SandboxManager
from fibreflow.sandbox.results import instrumented_command, parse_coverage, parse_junit, pytest_args
from fibreflow.store import Store

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")

MIXED_TESTS = """\
import pytest
from calc import add, sub


def test_add():
    assert add(2, 2) == 4


def test_sub_is_wrong():
    assert sub(5, 3) == 1, "sub is broken"


@pytest.mark.skip(reason="later")
def test_later():
    pass


@pytest.fixture
def broken():
    raise RuntimeError("fixture exploded")


def test_uses_broken(broken):
    pass
"""


@pytest.fixture
def mixed_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "mixed", {
        "calc.py": "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\n"
                   "def unused(x):\n    if x:\n        return 1\n    return 2\n",
        "test_calc.py": MIXED_TESTS,
    })


@dataclass
class WriteFileAgent:
    """A real agent object: writes one file through the Sandbox protocol and reports it."""

    name: str = "writer"

    def run(self, task: dict[str, str], sandbox: Sandbox) -> dict[str, object]:
        sandbox.write_files({task["path"]: task["content"]})
        res = sandbox.run(f"cat {task['path']}")
        return {"status": "completed", "echo": res.stdout}


def test_sessions_are_recorded_with_backend_profile_and_timing(store: Store, backend: LocalBackend,
                                                               repo: Path) -> None:
    manager = SandboxManager(store=store, repo=repo, backend=backend, run_id="run-1")
    sb = manager.create_sandbox("feat-a", tight(), attempt_id="att-1")
    sb.run("python -c 'sum(range(3_000_000))'")
    manager.cleanup_sandbox(sb, outcome="passed")
    manager.cleanup_sandbox(sb, outcome="passed")  # a second cleanup records nothing more
    with manager.session("feat-b", "quick") as other:
        other.run("sleep 5", timeout=0.3)
    rows = store.query_df("SELECT * FROM sandbox_sessions ORDER BY started_at")
    assert list(rows["session_id"]) == [sb.id, other.id]
    first, second = rows.iloc[0], rows.iloc[1]
    assert (first.backend, first.profile, first.isolation, first.run_id, first.feature_id, first.attempt_id,
            first.outcome) == ("local", "quick", "bwrap+overlay", "run-1", "feat-a", "att-1", "passed")
    assert first.ended_at > first.started_at
    assert 0 < first.cpu_s < 30 and first.est_cost_usd == 0.0
    assert first.killed_reason is None or first.killed_reason != first.killed_reason  # NULL
    assert (second.feature_id, second.profile, second.outcome, second.killed_reason) == \
        ("feat-b", "quick", "closed", "timeout")


def test_a_failing_block_is_recorded_as_error_and_still_cleaned(store: Store, backend: LocalBackend,
                                                                repo: Path) -> None:
    manager = SandboxManager(store=store, repo=repo, backend=backend)
    with pytest.raises(RuntimeError):
        with manager.session("feat", tight()) as sb:
            raise RuntimeError("agent crashed")
    assert not sb.dir.exists()
    assert store.scalar("SELECT outcome FROM sandbox_sessions") == "error"


def test_execute_feature_hands_the_task_to_the_agent(store: Store, backend: LocalBackend, repo: Path) -> None:
    manager = SandboxManager(store=store, repo=repo, backend=backend)
    with manager.session("feat", tight()) as sb:
        outcome = manager.execute_feature(sb, {"path": "src/new.py", "content": "VALUE = 42\n"}, WriteFileAgent())
        assert outcome == {"status": "completed", "echo": "VALUE = 42\n"}
        results = manager.extract_results(sb)
    assert results.test_result is None and results.tests_passed == 0
    assert "+VALUE = 42" in results.diff and "b/src/new.py" in results.diff
    assert set(results.timings) >= {"diff_s", "total_s"}


def test_extract_results_parses_real_pytest_junit_and_coverage(store: Store, backend: LocalBackend,
                                                               mixed_repo: Path) -> None:
    manager = SandboxManager(store=store, repo=mixed_repo, backend=backend)
    with manager.session("feat", "python-tests") as sb:
        results = manager.extract_results(sb, test_command="pytest -q")
    assert (results.tests_passed, results.tests_failed, results.tests_errors, results.tests_skipped) == (1, 1, 1, 1)
    names = dict(results.failures)
    assert "sub is broken" in names["test_calc::test_sub_is_wrong"]
    assert "fixture exploded" in names["test_calc::test_uses_broken"]
    assert results.test_result is not None and results.test_result.exit_code == 1
    assert not results.tests_ok
    assert results.coverage is not None and 0.5 < results.coverage < 1.0  # unused() is never run
    assert "test_sub_is_wrong" in results.logs
    assert results.diff == ""  # reports land in .fibreflow/, never in the attempt's change
    assert results.timings["tests_s"] > 0


def test_extract_results_of_a_passing_fix(store: Store, backend: LocalBackend, mixed_repo: Path) -> None:
    manager = SandboxManager(store=store, repo=mixed_repo, backend=backend)
    with manager.session("feat", "python-tests") as sb:
        sb.write_files({"test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(1, 1) == 2\n"})
        results = manager.extract_results(sb, test_command="python -m pytest -q test_calc.py")
    assert (results.tests_passed, results.tests_failed, results.tests_errors) == (1, 0, 0)
    assert results.tests_ok
    assert "-def test_sub_is_wrong():" in results.diff


def test_a_non_pytest_test_command_runs_unchanged(store: Store, backend: LocalBackend, repo: Path) -> None:
    manager = SandboxManager(store=store, repo=repo, backend=backend)
    assert instrumented_command("make test", junit_path="j.xml", coverage_path="c.json") == "make test"
    with manager.session("feat", tight()) as sb:
        results = manager.extract_results(sb, test_command="echo checked; exit 4")
    assert results.test_result is not None and results.test_result.exit_code == 4
    assert results.logs.startswith("checked") and results.tests_passed == 0 and results.coverage is None


def test_pytest_command_recognition() -> None:
    assert pytest_args("pytest -q tests/x.py") == ["-q", "tests/x.py"]
    assert pytest_args("python3 -m pytest -k 'a and b'") == ["-k", "a and b"]
    assert pytest_args("npm test") is None and pytest_args("pytest 'unbalanced") is None
    assert parse_coverage('{"totals": {"percent_covered": 87.5}}') == 0.875
    assert parse_coverage("not json") is None
    with pytest.raises(SyntaxError):
        parse_junit("<testsuite><testcase")


def test_unknown_profile_and_backend_name_the_known_ones(store: Store, repo: Path, tmp_path: Path) -> None:
    manager = SandboxManager(store=store, repo=repo, backend="local", state_dir=tmp_path / "state")
    with pytest.raises(ConfigError, match="known: quick, python-tests, build, networked"):
        manager.create_sandbox("feat", "gigantic")
    with pytest.raises(SandboxError, match="known: local, e2b"):
        get_backend("docker")
    assert BACKENDS == ("local", "e2b")
    assert isinstance(get_backend("local", state_dir=tmp_path / "state"), LocalBackend)
