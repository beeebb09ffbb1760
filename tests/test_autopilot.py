"""The autopilot end to end: real git repositories, real local sandboxes, the scripted model
through the real SDK, real deploy and smoke commands, a local Slack receiver, real DuckDB."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nbformat
import pytest
import yaml

from fibreflow.autopilot import (
    AutopilotOptions,
    approve_run,
    load_result,
    reject_run,
    resume_autopilot,
    run_autopilot,
)
from fibreflow.autopilot.decompose import decompose_goal
from fibreflow.cli import main
from fibreflow.config import Settings, load_settings
from fibreflow.errors import AutopilotError, ConfigError
from fibreflow.models.client import LLMClient
from fibreflow.models.scripts import write_demo_repo
from fibreflow.reporting.runner import run_report
from fibreflow.store import Store
from fibreflow.testing.slack_receiver import SlackReceiver

FIX = "printf 'def add(a, b):\\n    return a + b\\n' > calc.py"
GOAL = "Fix calc.add: it must return the sum of its arguments."
# the least deploy settings a run needs: a staging command and one smoke check
DEPLOY = {"staging_command": "true", "smoke_checks": [{"name": "up", "command": "true"}]}
DECOMPOSITION = {"turns": [{"tool_use": {"name": "record_feature_list", "input": {"features": [
    {"id": "fix-add", "description": GOAL, "test_command": "python -m pytest -q"}]}}}]}


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def _state_of(repo: Path) -> dict[str, str]:
    """Everything of the user's checkout the autopilot must leave alone."""
    return {"branch": _git(repo, "symbolic-ref", "HEAD"), "head": _git(repo, "rev-parse", "HEAD"),
            "status": _git(repo, "status", "--porcelain"), "cached": _git(repo, "diff", "--cached"),
            "calc": (repo / "calc.py").read_text(), "readme": (repo / "README.md").read_text()}


@pytest.fixture
def configure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Settings]:
    """Write an ``autopilot:`` section to a settings file in force for CLI calls and subprocesses too."""
    def write(**autopilot: object) -> Settings:
        path = tmp_path / "fibreflow.yaml"
        path.write_text(yaml.safe_dump({"autopilot": autopilot}))
        monkeypatch.setenv("FIBREFLOW_CONFIG", str(path))
        return load_settings(path)

    return write


@pytest.fixture(autouse=True)
def _own_tmpdir(own_tmpdir: Path) -> None:
    """Runs left awaiting go keep their deploy checkouts in the test's own ``$TMPDIR``."""


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The demo repository (``add`` subtracts) with an uncommitted change and an untracked file."""
    r = write_demo_repo(tmp_path / "repo")
    (r / "README.md").write_text("# calc\n\nwork in progress, not committed\n")
    (r / "notes.txt").write_text("untracked\n")
    return r


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    d = tmp_path / "marks"
    d.mkdir()
    return d


@pytest.fixture
def staging_server() -> Iterator[str]:
    """A staging app on 127.0.0.1: /health answers 200, anything else 404."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200 if self.path == "/health" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_scripted_model_build_branch_staging_smoke_slack_and_approve(
        store: Store, repo: Path, marks: Path, tmp_path: Path, staging_server: str,
        monkeypatch: pytest.MonkeyPatch, configure: Callable[..., Settings]) -> None:
    script = tmp_path / "decompose.yaml"
    script.write_text(yaml.safe_dump(DECOMPOSITION))
    settings = configure(
        staging_command=f'echo "$FIBREFLOW_BRANCH" > {marks}/staged && echo FIBREFLOW_STAGING_URL={staging_server}',
        production_command=f'echo "$FIBREFLOW_COMMIT" > {marks}/production',
        smoke_checks=[{"url": "{staging_url}/health", "expect_status": 200, "name": "health"},
                      {"command": f"grep -q 'a + b' calc.py && touch {marks}/smoke", "name": "fixed"}])
    before = _state_of(repo)
    with SlackReceiver() as slack:
        monkeypatch.setenv("SLACK_WEBHOOK_URL", slack.webhook_url)
        options = AutopilotOptions(attempts=3, agent="claude", offline=True, agent_script="demo_feature",
                                   decompose_script=str(script))
        result = run_autopilot(GOAL, options, repo=repo, store=store, settings=settings)
        assert result.state == "awaiting_approval", result.error
        message = slack.wait_for(1)[0]

    rid = result.run_id
    branch = f"fibreflow/{rid}/fix-add"
    assert result.branch == branch and result.features[0]["winner"] and not result.needs_review
    assert "return a + b" in _git(repo, "show", f"{branch}:calc.py")
    assert _git(repo, "rev-parse", f"{branch}^").strip() == before["head"].strip()  # built on HEAD
    assert _state_of(repo) == before  # current branch, index, working tree and untracked files untouched
    assert (marks / "staged").read_text().strip() == branch and (marks / "smoke").exists()
    assert result.staging_url == staging_server and [c["ok"] for c in result.smoke] == [True, True]

    blocks = json.dumps(message.blocks)
    assert message.blocks[0]["type"] == "header" and f"fibreflow approve {rid}" in blocks
    assert "100%" in blocks and staging_server in blocks and "+1 -1" in blocks and "$0.0" in blocks

    steps = {s["step"]: s for s in result.steps}
    assert steps["decompose"]["detail"]["source"] == "model" and steps["decompose"]["detail"]["scripted"]
    assert steps["select:fix-add"]["detail"]["consensus"]["method"] == "behaviour"
    assert steps["sla_gate:staging"]["status"] == "skipped" and steps["notify"]["status"] == "completed"
    assert store.scalar("SELECT count(*) FROM llm_calls WHERE run_id = ? AND agent = 'autopilot-decomposer'",
                        [rid]) == 1
    assert result.cost_usd > 0

    approved = approve_run(rid, by="tester", store=store, settings=settings)
    assert approved.state == "deployed" and approved.decided_by == "tester"
    assert (marks / "production").read_text().strip() == _git(repo, "rev-parse", branch).strip()
    with pytest.raises(AutopilotError, match="it is deployed"):
        approve_run(rid, store=store, settings=settings)
    assert _state_of(repo) == before


def _command_run(store: Store, repo: Path, settings: Settings, **kw: object) -> object:
    # offline without a decomposition script: the goal is the one feature (no model call)
    options = AutopilotOptions(**{"attempts": 1, "agent": "command", "agent_command": FIX, "offline": True, **kw})
    return run_autopilot(GOAL, options, repo=repo, store=store, settings=settings)


def test_reject_records_the_reason_and_refuses_a_later_approve(
        store: Store, repo: Path, configure: Callable[..., Settings], capsys: pytest.CaptureFixture[str]) -> None:
    settings = configure(**DEPLOY, production_command="true")
    rid = _command_run(store, repo, settings).run_id
    with pytest.raises(ConfigError, match="needs a reason"):
        reject_run(rid, reason="  ", store=store, settings=settings)
    assert main(["reject", rid, "--reason", "the approach is wrong", "--by", "ana"]) == 0
    run = store.query_df("SELECT state, decision_reason, decided_by FROM autopilot_runs WHERE run_id = ?",
                         [rid]).iloc[0]
    assert (run.state, run.decision_reason, run.decided_by) == ("rejected", "the approach is wrong", "ana")
    assert load_result(store, rid).steps[-1]["detail"] == {"by": "ana", "reason": "the approach is wrong",
                                                           "via": "cli"}
    capsys.readouterr()
    assert main(["approve", rid]) == 1
    assert "it is rejected" in capsys.readouterr().err
    assert main(["approve", "run-does-not-exist"]) == 2


def test_sla_violation_stops_each_deploy_and_lists_the_violations(
        store: Store, repo: Path, marks: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        configure: Callable[..., Settings]) -> None:
    exports = tmp_path / "exports"
    exports.mkdir()
    stale = exports / "orders.csv"
    stale.write_text("id\n1\n")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    slas = tmp_path / "slas.yaml"
    slas.write_text(yaml.safe_dump({"slas": {"exports_fresh": 60},
                                    "checks": {"exports_fresh": {"type": "file_age", "path": str(exports),
                                                                 "glob": "*.csv"}}}))
    configure(staging_command=f"touch {marks}/staged", production_command=f"touch {marks}/production",
              smoke_checks=DEPLOY["smoke_checks"], sla_gate={"names": ["exports_fresh"], "config_path": str(slas)})

    code = main(["build", "--autopilot", GOAL, "--repo", str(repo), "--agent", "command", "--agent-command", FIX,
                 "--attempts", "1", "--run-id", "run-gated", "--offline", "--no-progress"])
    out = capsys.readouterr()
    assert code == 1 and "exports_fresh: violation" in out.out and "sla_gate:staging" in out.out
    assert not (marks / "staged").exists()  # the deploy step never ran
    gate = load_result(store, "run-gated").steps[-1]
    assert gate["step"] == "sla_gate:staging" and gate["status"] == "failed"
    assert [v["name"] for v in gate["detail"]["violations"]] == ["exports_fresh"]
    assert gate["detail"]["violations"][0]["value"] > 60

    os.utime(stale)  # the data is fresh again: resuming passes the gate without rebuilding
    assert main(["build", "--resume", "run-gated", "--json"]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["state"] == "awaiting_approval" and (marks / "staged").exists()
    assert {s["step"]: s["try"] for s in resumed["steps"]}["build:goal"] == 1

    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    assert main(["approve", "run-gated"]) == 1
    assert "exports_fresh" in capsys.readouterr().out
    assert load_result(store, "run-gated").state == "deploy_blocked" and not (marks / "production").exists()


def test_resume_after_a_crash_continues_from_the_last_completed_step(
        store: Store, repo: Path, marks: Path, configure: Callable[..., Settings]) -> None:
    # the staging command kills the fibreflow process the first time: a real crash mid-step
    crash = (f"if [ ! -e {marks}/crashed ]; then touch {marks}/crashed; kill -9 $PPID; exit 0; fi; "
             f"touch {marks}/staged")
    settings = configure(staging_command=crash, smoke_checks=DEPLOY["smoke_checks"])
    proc = subprocess.run([sys.executable, "-m", "fibreflow.cli", "build", "--autopilot", GOAL, "--repo", str(repo),
                           "--agent", "command", "--agent-command", FIX, "--attempts", "1", "--run-id", "run-crash",
                           "--offline", "--no-progress"], capture_output=True, text=True, env=os.environ.copy(), timeout=120)
    assert proc.returncode == -9, proc.stderr
    before = load_result(store, "run-crash")
    assert before.state == "running" and before.steps[-1]["step"] == "deploy:staging"
    assert before.steps[-1]["status"] == "running" and not (marks / "staged").exists()
    commit = before.features[0]["commit"]

    result = resume_autopilot("run-crash", store=store, settings=settings)
    assert result.state == "awaiting_approval" and (marks / "staged").exists()
    tries = store.query_df("SELECT step, count(*) AS n, max(try_no) AS last FROM autopilot_steps "
                           "WHERE run_id = 'run-crash' GROUP BY step").set_index("step")
    assert tries.loc[["decompose", "build:goal", "select:goal", "commit:goal"], "n"].tolist() == [1, 1, 1, 1]
    assert tries.loc["deploy:staging", "n"] == 2
    assert store.scalar("SELECT count(*) FROM attempts WHERE run_id LIKE 'run-crash%'") == 1  # not rebuilt
    assert result.commit == commit == _git(repo, "rev-parse", "fibreflow/run-crash/goal").strip()


def test_coverage_below_the_floor_ships_nothing(store: Store, repo: Path,
                                                 configure: Callable[..., Settings]) -> None:
    uncovered = FIX + " && printf '\\n\\ndef unused(x):\\n    if x:\\n        return 1\\n    return 2\\n' >> calc.py"
    result = _command_run(store, repo, configure(), agent_command=uncovered, no_deploy=True)
    assert result.state == "failed" and result.failed_step == "select:goal"
    assert "below the floor 95%" in result.error
    assert _git(repo, "branch", "--list", "fibreflow/*") == ""
    relaxed = _command_run(store, repo, configure(), agent_command=uncovered, coverage_floor=0.5, no_deploy=True)
    assert relaxed.state == "committed" and 0.5 < relaxed.features[0]["coverage"] < 0.95


LEARNER = (f"if grep -q NameError .fibreflow/task.md; then {FIX}; else "
           "printf 'def add(a, b):\\n    return a + c\\n' > calc.py; fi")


def test_failures_are_learned_and_the_next_iteration_uses_them(store: Store, repo: Path,
                                                               configure: Callable[..., Settings]) -> None:
    # without a known pitfall the agent writes a NameError; with one in its task it writes the fix
    result = _command_run(store, repo, configure(iterations=2, **DEPLOY), agent_command=LEARNER, attempts=2)
    assert result.state == "awaiting_approval"
    by_iteration = store.query_df("SELECT iteration, count(*) FILTER (WHERE status = 'passed') AS passed, "
                                  "count(*) AS n FROM attempts GROUP BY 1 ORDER BY 1")
    assert by_iteration.values.tolist() == [[1, 0, 2], [2, 2, 2]]
    patterns = store.query_df("SELECT pattern_id, error_type, count FROM learned_patterns")
    assert patterns.error_type.tolist() == ["NameError"] and patterns["count"].tolist() == [2]
    assert store.scalar("SELECT count(*) FROM pattern_events WHERE event = 'helped'") == 2


def test_failures_are_learned_and_the_resumed_build_uses_them(store: Store, repo: Path,
                                                               configure: Callable[..., Settings]) -> None:
    settings = configure(iterations=1)
    first = _command_run(store, repo, settings, agent_command=LEARNER, attempts=2, no_deploy=True)
    assert first.state == "failed" and first.failed_step == "build:goal"
    patterns = store.query_df("SELECT pattern_id, error_type, count FROM learned_patterns")
    assert patterns.error_type.tolist() == ["NameError"] and patterns["count"].tolist() == [2]

    second = resume_autopilot(first.run_id, store=store, settings=settings)
    assert second.state == "committed"
    build = next(s for s in second.steps if s["step"] == "build:goal")
    assert build["try"] == 2 and build["detail"]["learnings_shown"] == patterns.pattern_id.tolist()
    assert store.scalar("SELECT count(*) FROM pattern_events WHERE event = 'helped'") == 2


@pytest.mark.slow
def test_build_report_notebook_runs_the_offline_demo_under_papermill(store: Store, tmp_path: Path) -> None:
    demo = write_demo_repo(tmp_path / "demo")
    out = run_report("build", parameters={"attempts": 2, "repo": str(demo)}, reports_dir=tmp_path / "reports",
                     timeout_s=240)
    nb = nbformat.read(out.notebook_path, as_version=4)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    rid = store.scalar("SELECT run_id FROM autopilot_runs")
    assert load_result(store, rid).state == "committed"  # a report's build ends at its branches
    html = out.html_path.read_text()
    assert "test_suite" in html and "select:goal" in html and "passed" in html
    assert "return a + b" in _git(demo, "show", f"fibreflow/{rid}/goal:calc.py")


def test_decomposition_sends_an_invalid_feature_list_back_once(store: Store, repo: Path) -> None:
    bad = {"features": [{"id": "b", "description": "uses a", "dependencies": ["a"]}]}
    good = {"features": [{"id": "a", "description": "first"},
                         {"id": "b", "description": "second", "dependencies": ["a"]}]}
    turns = [{"tool_use": {"name": "record_feature_list", "input": bad}},
             {"tool_use": {"name": "record_feature_list", "input": good}}]
    with LLMClient(store=store, offline=True, script={"turns": turns}) as client:
        features, detail = decompose_goal("two steps", client=client, outline="Files:\ncalc.py", max_features=5)
        retry = client.scripted.requests[1].body
    assert [f.id for f in features.ordered()] == ["a", "b"] and detail["tries"] == 2
    error = retry["messages"][-1]["content"][0]
    assert error["is_error"] and "unknown dependency 'a'" in error["content"]
    assert retry["tool_choice"] == {"type": "tool", "name": "record_feature_list"}


def test_failed_smoke_check_stops_before_the_approval_request_and_is_learned(
        store: Store, repo: Path, marks: Path, configure: Callable[..., Settings]) -> None:
    settings = configure(staging_command=f"touch {marks}/staged", smoke_checks=[
        {"name": "refuses", "url": "http://127.0.0.1:9/", "timeout_s": 0.5},
        {"name": "broken", "command": "echo 'ERROR: migrations pending' && exit 3"}])
    result = _command_run(store, repo, settings)
    assert result.state == "failed" and result.failed_step == "smoke" and (marks / "staged").exists()
    assert "2 of 2 smoke checks failed: refuses, broken" in result.error
    checks = {c["name"]: c for c in result.smoke}
    assert checks["refuses"]["status"] is None and checks["refuses"]["error"]
    assert checks["broken"]["exit_code"] == 3 and "migrations pending" in checks["broken"]["output"]
    assert "notify" not in {s["step"] for s in result.steps}
    assert store.scalar("SELECT error_type FROM learned_patterns") == "SmokeTestFailure"


def test_options_round_trip_through_the_stored_json_and_old_rows_still_read(tmp_path: Path) -> None:
    settings = load_settings()
    features = tmp_path / "features.json"
    options = AutopilotOptions(agent="command", agent_command=FIX, offline=True, features_path=features,
                               dirty=("README.md",)).resolved(settings)
    stored = json.loads(json.dumps(options.to_dict()))
    assert list(stored) == ["attempts", "workers", "agent", "agent_command", "agent_timeout", "agent_script",
                            "offline", "decompose_script", "backend", "profile", "test_command", "coverage_floor",
                            "dirty", "features_path", "model", "data_policy", "no_deploy"]
    assert stored["attempts"] == settings.autopilot.attempts and stored["profile"] == settings.sandbox.profile
    assert stored["features_path"] == str(features.resolve()) and stored["dirty"] == ["README.md"]
    assert AutopilotOptions.from_dict(stored) == dataclasses.replace(options, features_path=str(features.resolve()))
    # a row from before a field existed, or with a key this version does not know
    old = AutopilotOptions.from_dict({"attempts": 2, "agent": "command", "backend": "local", "retired_key": 1})
    assert (old.attempts, old.agent, old.dirty, old.features_path) == (2, "command", (), None)
    with pytest.raises(ConfigError, match="attempts must be at least 1"):
        AutopilotOptions(attempts=0).resolved(settings)


def test_autopilot_without_deploy_settings_stops_before_building_unless_no_deploy(
        store: Store, repo: Path, tmp_path: Path, configure: Callable[..., Settings],
        capsys: pytest.CaptureFixture[str]) -> None:
    args = ["build", "--autopilot", GOAL, "--repo", str(repo), "--agent", "command", "--agent-command", FIX,
            "--attempts", "1", "--offline", "--no-progress"]
    configure()
    assert main([*args, "--run-id", "run-nodeploy"]) == 2
    err = capsys.readouterr().err
    assert "autopilot.staging_command and autopilot.smoke_checks are not set in" in err
    assert str(tmp_path / "fibreflow.yaml") in err and "--no-deploy" in err
    configure(staging_command="true")
    assert main([*args, "--run-id", "run-nodeploy"]) == 2
    err = capsys.readouterr().err
    assert "autopilot.smoke_checks is not set" in err and "staging_command" not in err
    assert store.scalar("SELECT count(*) FROM autopilot_runs") == 0
    assert store.scalar("SELECT count(*) FROM attempts") == 0  # nothing was built

    assert main([*args, "--run-id", "run-nodeploy", "--no-deploy"]) == 0
    out = capsys.readouterr().out
    assert "run-nodeploy: committed" in out and "ended at the committed branches (--no-deploy)" in out
    result = load_result(store, "run-nodeploy")
    assert [s["step"] for s in result.steps] == ["decompose", "build:goal", "select:goal", "commit:goal",
                                                 "test_suite"]
    assert result.steps[-1]["detail"]["tests_passed"] == 2
    assert "return a + b" in _git(repo, "show", "fibreflow/run-nodeploy/goal:calc.py")


def test_approve_without_a_production_command_says_so_and_changes_nothing(
        store: Store, repo: Path, configure: Callable[..., Settings], capsys: pytest.CaptureFixture[str]) -> None:
    settings = configure(**DEPLOY)
    rid = _command_run(store, repo, settings).run_id
    capsys.readouterr()
    assert main(["approve", rid, "--by", "ana"]) == 2
    err = capsys.readouterr().err
    assert "autopilot.production_command" in err and "not set in" in err
    run = store.query_df("SELECT state, decided_by FROM autopilot_runs WHERE run_id = ?", [rid]).iloc[0]
    assert run.state == "awaiting_approval" and run.decided_by is None
    assert "approve" not in {s["step"] for s in load_result(store, rid).steps}


UNITS = "def km(metres):\n    return metres / 1000\n"
UNITS_TEST = "from units import km\n\n\ndef test_km():\n    assert km(2500) == 2.5\n"


def test_the_whole_suite_runs_on_the_combined_winners_and_names_failing_tests_and_features(
        store: Store, tmp_path: Path, marks: Path, configure: Callable[..., Settings]) -> None:
    r = write_demo_repo(tmp_path / "suite-repo", git=False)
    (r / "units.py").write_text(UNITS)
    (r / "tests" / "test_units.py").write_text(UNITS_TEST)
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t.invalid", "commit",
                                                 "-q", "-m", "base"]):
        subprocess.run(["git", *args], cwd=r, check=True, capture_output=True)
    features = tmp_path / "features.json"
    only_calc = "python -m pytest -q tests/test_calc.py"  # each feature's own tests pass
    features.write_text(json.dumps({"features": [
        {"id": "fix-add", "description": "Fix calc.add", "test_command": only_calc},
        {"id": "docs", "description": "Document calc", "test_command": only_calc, "dependencies": ["fix-add"]}]}))
    # fix-add also breaks units.km, whose test only the whole suite runs; docs touches the README only
    agent = (f"if grep -q 'Fix calc' .fibreflow/task.md; then {FIX} && printf 'def km(metres):\\n    return metres\\n'"
             " > units.py; else echo 'see calc.py' >> README.md; fi")
    settings = configure(staging_command=f"touch {marks}/staged", smoke_checks=DEPLOY["smoke_checks"])
    options = AutopilotOptions(attempts=1, agent="command", agent_command=agent, offline=True,
                               features_path=features, coverage_floor=0)
    result = run_autopilot(None, options, repo=r, store=store, settings=settings)

    assert result.state == "failed" and result.failed_step == "test_suite"
    assert "tests/test_units.py::test_km (features: fix-add)" in result.error
    assert "docs" not in result.error.split("failing:")[1]
    suite = next(s for s in result.steps if s["step"] == "test_suite")
    assert suite["detail"]["failing"][0]["features"] == ["fix-add"] and suite["detail"]["tests_passed"] == 2
    assert not (marks / "staged").exists()  # nothing was deployed
    assert _git(r, "show", f"fibreflow/{result.run_id}/docs:units.py") == "def km(metres):\n    return metres\n"
