"""The parallel runner end to end: a real git repo, real local sandboxes, real DuckDB rows."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest
from repo_support import demo_repo_and_features, git, make_repo

from fibreflow.agents import AttemptOutcome
from fibreflow.agents.command import CommandAgent
from fibreflow.build.features import FeatureList
from fibreflow.build.progress import ProgressEvent, TerminalProgress
from fibreflow.build.runner import ParallelRunner, default_workers
from fibreflow.cli import main
from fibreflow.errors import RunnerError

# even attempts fix `add`; `mul` is never solved; the rest need no change
AGENT = ("case \"$FIBREFLOW_FEATURE\" in add) if [ $((FIBREFLOW_ATTEMPT % 2)) -eq 0 ]; then "
         "printf 'def add(a, b):\\n    return a + b\\n' > calc.py; fi ;; esac; echo done")
FEATURES = [
    {"id": "add", "description": "add() adds", "test_command": "python -m pytest -q test_calc.py"},
    {"id": "sub", "description": "subtraction works", "dependencies": ["add"],
     "test_command": "python -m pytest -q test_sub.py"},
    {"id": "mul", "description": "mul() multiplies", "test_command": "python -m pytest -q test_mul.py"},
    {"id": "pow", "description": "pow() raises", "dependencies": ["mul"]},
    {"id": "report", "description": "a report", "dependencies": ["pow", "add"]},
]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {
        "calc.py": "def add(a, b):\n    return 0\n",
        "test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n",
        "test_sub.py": "def test_sub():\n    assert 5 - 3 == 2\n",
        "test_mul.py": "from calc import mul\n\n\ndef test_mul():\n    assert mul(2, 3) == 6\n",
        ".gitignore": "__pycache__/\n.pytest_cache/\n.coverage*\n"})


def test_features_run_in_dependency_order_with_parallel_attempts(store, repo: Path) -> None:
    events: list[ProgressEvent] = []
    runner = ParallelRunner(store, repo, agent=CommandAgent(AGENT), attempts=3, workers=6,
                            profile="python-tests", progress=events.append)
    result = runner.run(FeatureList.from_data(FEATURES))

    assert not result.ok and result.status == "failed"
    by_id = {f.feature.id: f for f in result.features}
    assert {k: (f.status, f.passed_count, len(f.attempts)) for k, f in by_id.items()} == {
        "add": ("passed", 2, 3), "sub": ("passed", 3, 3), "mul": ("failed", 0, 3),
        "pow": ("skipped", 0, 0), "report": ("skipped", 0, 0)}
    assert by_id["pow"].reason == "dependency 'mul' failed"
    assert by_id["report"].reason == "dependency 'pow' was skipped"
    winners = [a for a in by_id["add"].attempts if a.passed]
    assert sorted(a.attempt_index for a in winners) == [0, 2]
    assert all("+    return a + b" in a.diff and a.tests_passed == 1 for a in winners)
    loser = next(a for a in by_id["add"].attempts if not a.passed)
    assert loser.tests_failed == 1 and loser.diff == ""

    rid = result.run_id
    run = store.query_df("SELECT * FROM runs WHERE run_id = ?", [rid]).iloc[0]
    assert (run.status, run.attempts_per_feature, run.workers, run.backend) == ("failed", 3, 6, "local")
    assert pd.notna(run.ended_at) and pd.notna(run.started_at) and isinstance(run.ended_at, pd.Timestamp) and run.ended_at > run.started_at
    feats = store.query_df("SELECT feature_id, status FROM features WHERE run_id = ? ORDER BY feature_id", [rid])
    assert dict(zip(feats.feature_id, feats.status, strict=True)) == {
        "add": "passed", "mul": "failed", "pow": "skipped", "report": "skipped", "sub": "passed"}
    rows = store.query_df("SELECT * FROM attempts WHERE run_id = ?", [rid])
    assert len(rows) == 9 and set(rows.status) == {"passed", "failed"}
    assert (rows.sandbox_id.notna()).all() and (rows.ended_at >= rows.started_at).all()
    add_end = rows[rows.feature_id == "add"].ended_at.max()
    assert (rows[rows.feature_id == "sub"].started_at >= add_end).all()  # dependency order
    sessions = store.query_df("SELECT * FROM sandbox_sessions WHERE run_id = ?", [rid])
    assert sorted(sessions.attempt_id) == sorted(rows.attempt_id) and sessions.ended_at.notna().all()

    assert (repo / "calc.py").read_text() == "def add(a, b):\n    return 0\n"  # the working tree is untouched
    assert git(repo, "status", "--porcelain") == ""
    assert events[0].kind == "run_started" and events[-1].kind == "run_finished"
    assert (events[-1].done, events[-1].total, events[-1].passed, events[-1].failed) == (9, 9, 5, 4)


class _Sleepy:
    name = "sleepy"

    def run(self, task, sandbox) -> AttemptOutcome:
        time.sleep(1.0)
        if task.attempt_index == 1:
            raise RuntimeError("agent crashed")
        sandbox.write_files({"note.txt": f"attempt {task.attempt_index}\n"})
        return AttemptOutcome(status="completed", cost_usd=0.5)


def test_attempts_overlap_and_a_crashing_agent_fails_only_its_attempt(store, repo: Path) -> None:
    features = FeatureList.from_goal("leave a note", test_command="test -f note.txt")
    result = ParallelRunner(store, repo, agent=_Sleepy(), attempts=4, workers=4, profile="quick").run(features)
    # they overlapped: some attempt started before another had ended (the speed-up is `bench parallel`)
    spans = store.query_df("SELECT started_at, ended_at FROM attempts WHERE run_id = ? ORDER BY started_at",
                           [result.run_id])
    assert len(spans) == 4 and spans.ended_at.notna().all()
    assert (spans.started_at.iloc[1:].to_numpy() < spans.ended_at.cummax().iloc[:-1].to_numpy()).any(), spans
    attempts = {a.attempt_index: a for a in result.features[0].attempts}
    assert attempts[1].status == "error" and "RuntimeError: agent crashed" in attempts[1].error
    assert [attempts[i].status for i in (0, 2, 3)] == ["passed"] * 3
    assert result.ok and result.features[0].to_dict()["cost_usd"] == 1.5
    assert store.scalar("SELECT count(*) FROM attempts WHERE status = 'error' AND run_id = ?",
                        [result.run_id]) == 1


def test_escalation_hook_retries_at_the_next_tier(store, repo: Path) -> None:
    agent = CommandAgent('[ "$FIBREFLOW_MODEL_TIER" = sonnet ] && '
                         "printf 'def mul(a, b):\\n    return a * b\\n' >> calc.py; true")
    tiers = iter(["sonnet", None])
    features = FeatureList.from_data([{"id": "mul", "description": "mul", "tier": "haiku",
                                       "test_command": "python -m pytest -q test_mul.py"}])
    result = ParallelRunner(store, repo, agent=agent, attempts=2, profile="quick",
                            escalate=lambda feature, res: next(tiers)).run(features)
    feature = result.features[0]
    assert feature.status == "passed" and feature.solved_tier == "sonnet"
    assert [(a.iteration, a.tier, a.status) for a in sorted(feature.attempts, key=lambda a: a.attempt_id)] == [
        (1, "haiku", "failed"), (1, "haiku", "failed"), (2, "sonnet", "passed"), (2, "sonnet", "passed")]
    assert store.scalar("SELECT solved_tier FROM features WHERE run_id = ?", [result.run_id]) == "sonnet"


@pytest.mark.slow
def test_runs_on_e2b_against_a_served_host(store, repo: Path, tmp_path: Path) -> None:
    pytest.importorskip("e2b")
    from e2b_support import backend_for, e2b_server

    with e2b_server() as server:
        backend = backend_for(server)
        features = FeatureList.from_data([FEATURES[0]])
        result = ParallelRunner(store, repo, agent=CommandAgent(AGENT), backend=backend, attempts=2,
                                profile="quick").run(features)
        assert result.features[0].passed_count == 1
        sessions = store.query_df("SELECT backend, est_cost_usd FROM sandbox_sessions WHERE run_id = ?",
                                  [result.run_id])
        assert list(sessions.backend) == ["e2b", "e2b"] and (sessions.est_cost_usd > 0).all()
        assert backend.list_sandboxes() == []


def test_default_workers_follow_the_backend() -> None:
    cpus = os.cpu_count() or 1
    assert default_workers("local", attempts=1) == min(64, 2 * cpus)
    assert default_workers("local", attempts=40) == min(64, max(40, 2 * cpus))
    assert default_workers("e2b", attempts=3) == 20


def test_every_attempt_has_a_deadline_by_default(store, repo: Path) -> None:
    from fibreflow.agents import AttemptLimits
    from fibreflow.sandbox.profiles import load_profile

    runner = ParallelRunner(store, repo, agent=CommandAgent("true"), profile="quick")
    assert runner.limits.timeout_s == load_profile("quick").wall_timeout_s
    given = ParallelRunner(store, repo, agent=CommandAgent("true"), limits=AttemptLimits(timeout_s=7, max_turns=3))
    assert (given.limits.timeout_s, given.limits.max_turns) == (7, 3)
    kept = ParallelRunner(store, repo, agent=CommandAgent("true"), profile="build", limits=AttemptLimits(max_turns=2))
    assert (kept.limits.timeout_s, kept.limits.max_turns) == (load_profile("build").wall_timeout_s, 2)


def test_bad_arguments_are_refused(store, repo: Path) -> None:
    with pytest.raises(RunnerError, match="attempts"):
        ParallelRunner(store, repo, agent=CommandAgent("true"), attempts=0)
    with pytest.raises(RunnerError, match="not a directory"):
        ParallelRunner(store, repo / "missing", agent=CommandAgent("true"))
    features = FeatureList.from_data([{"id": "a", "description": "x", "agent": "nope"}])
    with pytest.raises(RunnerError, match="feature 'a': unknown agent 'nope'"):
        ParallelRunner(store, repo, agent=CommandAgent("true")).run(features)


def test_terminal_progress_prints_plain_lines_off_a_tty(tmp_path: Path) -> None:
    out = (tmp_path / "progress.txt").open("w+")
    progress = TerminalProgress(out)
    progress(ProgressEvent("attempt_finished", "r1", 1, 2, 1, 0, 0, 0.5, feature_id="f", attempt_id="r1-f-1-0",
                           status="passed"))
    progress(ProgressEvent("run_finished", "r1", 2, 2, 1, 1, 0, 1.0, status="failed"))
    out.seek(0)
    lines = out.read().splitlines()
    assert lines[0].startswith("attempt r1-f-1-0: passed  [1/2 attempts  passed 1  failed 0")
    assert lines[1].startswith("run r1: failed  [2/2 attempts")


def test_build_command(repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["build", "make add() add", "--repo", str(repo), "--attempts", "2", "--profile", "quick",
                 "--agent-command", AGENT.replace("add)", "goal)"), "--test-command",
                 "python -m pytest -q test_calc.py", "--json", "--no-progress"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["passed"] is True and out["run_id"].startswith("run-")
    assert [(f["feature_id"], f["passed"], f["attempts"]) for f in out["features"]] == [("goal", 1, 2)]

    code = main(["build", "never solved", "--repo", str(repo), "--profile", "quick", "--agent-command", "true",
                 "--test-command", "python -m pytest -q test_mul.py"])
    captured = capsys.readouterr()
    assert code == 1 and "goal     failed  0/1" in captured.out and "run run-" in captured.out
    assert "attempt run-" in captured.err  # progress lines on stderr

    assert main(["build", "x", "--repo", str(repo)]) == 2
    assert "--agent-command" in capsys.readouterr().err
    cyclic = tmp_path / "cycle.json"
    cyclic.write_text(json.dumps([{"id": "a", "description": "x", "dependencies": ["a"]}]))
    assert main(["build", str(cyclic), "--repo", str(repo), "--agent-command", "true"]) == 2
    assert "a -> a" in capsys.readouterr().err
    assert main(["build", str(tmp_path / "missing.json"), "--repo", str(repo), "--agent-command", "true"]) == 2


def test_parallel_benchmark_reports_its_keys(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "parallel", "--json", "--attempts", "3", "--calls", "2", "--latency", "0.3",
                 "--model", "sleep"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and {"wall_1_s", "wall_15_s", "ratio"} <= set(out)
    assert out["wall_1_s"] >= 0.6 and out["wall_15_s"] >= 0.6  # the latency was really waited out
    assert out["ratio"] == pytest.approx(out["wall_15_s"] / out["wall_1_s"], abs=0.01)
    assert out["ratio"] < 2.5  # three attempts overlapped instead of running one after another


def test_notebook_progress_widget_follows_events() -> None:
    pytest.importorskip("ipywidgets")
    from fibreflow.build.progress import NotebookProgress

    widget = NotebookProgress()
    widget(ProgressEvent("attempt_finished", "r1", 3, 5, 2, 1, 0, 2.0, status="passed"))
    assert (widget.bar.value, widget.bar.max, widget.bar.bar_style) == (3, 5, "info")
    assert widget.label.value.startswith("3/5  passed 2  failed 1")
    widget(ProgressEvent("run_finished", "r1", 5, 5, 3, 2, 0, 4.0, status="failed"))
    assert widget.bar.bar_style == "danger" and "(failed)" in widget.label.value


REAL_LOOKING_KEY = "sk-ant-api03-" + "q7" * 40 + "-AAAAAAAA"


def _config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **models: object) -> None:
    """A config file in force whose ``models`` section is ``models``."""
    config = tmp_path / "fibreflow.yaml"
    config.write_text(json.dumps({"models": models}))  # JSON is YAML
    monkeypatch.setenv("FIBREFLOW_CONFIG", str(config))


def test_offline_build_sends_no_model_call_to_the_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from fibreflow.store import Store

    with socket.create_server(("127.0.0.1", 0)) as listener:  # records any connection in its backlog
        listener.setblocking(False)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        repo, features = demo_repo_and_features(tmp_path)
        _config(tmp_path, monkeypatch, base_url=url, timeout_s=2, max_retries=0)
        monkeypatch.setenv("ANTHROPIC_API_KEY", REAL_LOOKING_KEY)
        code = main(["build", str(features), "--repo", str(repo), "--agent", "claude", "--offline",
                     "--agent-script", "demo_feature", "--json", "--no-progress"])
        out = json.loads(capsys.readouterr().out)
        assert code == 0 and out["passed"] is True, out  # the scripted conversation fixed the feature
        # models.offline does the same, and needs no key
        monkeypatch.delenv("ANTHROPIC_API_KEY")
        _config(tmp_path, monkeypatch, base_url=url, offline=True, timeout_s=2, max_retries=0)
        code = main(["build", str(features), "--repo", str(repo), "--agent", "claude", "--agent-script",
                     "demo_feature", "--json", "--no-progress"])
        second = json.loads(capsys.readouterr().out)
        assert code == 0 and second["passed"] is True, second
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever connected to models.base_url
    calls = Store(os.environ["FIBREFLOW_DB"]).query_df(
        "SELECT run_id, status FROM llm_calls ORDER BY created_at").to_dict("records")
    assert {c["run_id"] for c in calls} == {out["run_id"], second["run_id"]} and len(calls) == 8
    assert {c["status"] for c in calls} == {"ok"}  # four scripted turns per build

    _config(tmp_path, monkeypatch, base_url=url)
    assert main(["build", str(features), "--repo", str(repo), "--agent", "claude",
                 "--agent-script", "demo_feature"]) == 2
    assert "--agent-script is the scripted model's conversation: it needs --offline" in capsys.readouterr().err


def test_agent_timeout_is_the_claude_attempts_deadline(store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from fibreflow.agents import AttemptLimits
    from fibreflow.agents.claude import ClaudeAgent
    from fibreflow.models.scripted import ScriptedServer

    # a model that never answers; 10 s per try and 2 retries would hold each attempt ~30 s
    with ScriptedServer({"default": "too late"}, latency_s=1000) as server:
        repo, features = demo_repo_and_features(tmp_path)
        _config(tmp_path, monkeypatch, base_url=server.base_url, timeout_s=10, max_retries=2, backoff_base_s=0.01)
        monkeypatch.setenv("ANTHROPIC_API_KEY", REAL_LOOKING_KEY)
        code = main(["build", str(features), "--repo", str(repo), "--agent", "claude", "--agent-timeout", "2",
                     "--json", "--no-progress"])
        out = json.loads(capsys.readouterr().out)
        assert code == 1 and server.request_count == 1  # no retry after the deadline
        # the runner's AttemptLimits make the same deadline for an agent given no timeout of its own
        with ClaudeAgent(store=store) as agent:
            result = ParallelRunner(store, repo, agent=agent, limits=AttemptLimits(timeout_s=2)).run(
                FeatureList.load(features))
        assert server.request_count == 2
    errors = store.query_df("SELECT run_id, status, error FROM attempts ORDER BY started_at").to_dict("records")
    assert [(e["run_id"], e["status"]) for e in errors] == [(out["run_id"], "failed"), (result.run_id, "failed")]
    for e in errors:
        assert e["error"].startswith("deadline exceeded: the attempt's time limit of 2s was reached: "), e["error"]
    assert "very" not in str(errors) and REAL_LOOKING_KEY not in str(errors)
