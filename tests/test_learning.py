"""Failure analysis on real failures run in real bwrap sandboxes, and the DuckDB knowledge base."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from fibreflow.cli import main
from fibreflow.learning import (
    AgentAttempt,
    FailureKnowledgeBase,
    LearningContext,
    analyze_failure,
    learning_stats,
    normalize_message,
)
from fibreflow.sandbox.backends import get_backend
from fibreflow.sandbox.base import CommandResult

BROKEN = {
    "app/__init__.py": "",
    "app/client.py": "import requestz\n\n\ndef fetch():\n    return requestz.get('x')\n",
    "app/broken.py": "def parse(text:\n    return text\n",
    "app/indent.py": "def f():\n    x = 1\n      return x\n",
    "app/names.py": "\n\ndef total(items):\n    return sum(items) + undefined_helper(items)\n\ntotal([1])\n",
    "app/attrs.py": "class Config:\n    pass\n\nConfig().timeout_s\n",
    "app/types.py": "def area(w, h):\n    return w * h\n\narea(3)\n",
    "app/values.py": "raise ValueError(f'bad sentinel {object()} in row 17')\n",
    "app/lint_me.py": "import os\nimport sys\n",
    "app/typed.py": "def label(x: int) -> str:\n    return x\n",
    "tests/__init__.py": "",
    "tests/test_math.py": "def add(a, b):\n    return a - b\n\n\ndef test_add():\n    assert add(2, 2) == 4\n\n\n"
                          "def test_ok():\n    assert add(2, 0) == 2\n",
}

RUNS = {
    "import": "python3 -m app.client",
    "syntax": "python3 app/broken.py",
    "indent": "python3 app/indent.py",
    "name": "python3 app/names.py",
    "attribute": "python3 app/attrs.py",
    "type": "python3 app/types.py",
    "value": "python3 app/values.py",
    "value_again": "python3 app/values.py",
    "test": "python3 -m pytest -q -p no:cacheprovider tests/test_math.py --junitxml=.fibreflow/junit.xml",
    "lint": "ruff check --no-cache app/lint_me.py",
    "typecheck": "python3 -m mypy --no-incremental app/typed.py",
    "smoke": "python3 -c \"import urllib.request; urllib.request.urlopen('http://127.0.0.1:9/health', timeout=2)\"",
    "deploy": "echo 'uploading build/app.tar.gz'; echo 'deploy: artifact build/app.tar.gz not found' >&2; exit 4",
    "unknown": "exit 3",
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict]]:
    """Every broken program run once in one real sandbox: what each command really printed."""
    repo = tmp_path_factory.mktemp("repo")
    for rel, text in BROKEN.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    backend = get_backend("local", state_dir=tmp_path_factory.mktemp("state"))
    out: dict[str, dict] = {}
    with backend.create(repo, "quick") as sandbox:
        for name, cmd in RUNS.items():
            result = sandbox.run(cmd, timeout=30)
            out[name] = {"result": result, "command": cmd}
        out["test"]["junit"] = sandbox.read_file(".fibreflow/junit.xml")
        # a second attempt makes the same mistake further down the same file
        sandbox.write_files({"app/names.py": "\n" * 6 + BROKEN["app/names.py"].replace("[1]", "[2, 3]")})
        out["name_shifted"] = {"result": sandbox.run(RUNS["name"], timeout=30)}
        out["timeout"] = {"result": sandbox.run("python3 -c 'while True: pass'", timeout=1)}
        out["memory"] = {"result": sandbox.run("python3 -c 'x = bytearray(2 << 30)'", timeout=30)}
        out["processes"] = {"result": sandbox.run(
            ["python3", "-c", "import subprocess\nps = [subprocess.Popen(['sleep', '3']) for _ in range(200)]"],
            timeout=30)}
    yield out


def attempt_of(run: dict, **kw) -> AgentAttempt:
    r: CommandResult = run["result"]
    return AgentAttempt(feature_id=kw.pop("feature_id", "f1"), test_output=r.stdout + r.stderr,
                        exit_code=r.exit_code, killed_reason=r.killed_reason,
                        artifacts={"junit.xml": run["junit"]} if "junit" in run else {}, **kw)


@pytest.mark.parametrize(("name", "error_type", "module", "where"), [
    ("import", "ModuleNotFoundError", "requestz", None),
    ("syntax", "SyntaxError", "app.broken", "app/broken.py:1"),
    ("indent", "IndentationError", "app.indent", "app/indent.py:3"),
    ("name", "NameError", "app.names", None),
    ("attribute", "AttributeError", "app.attrs", None),
    ("type", "TypeError", "app.types", None),
    ("value", "ValueError", "app.values", None),
    ("test", "AssertionError", "tests.test_math", None),
    ("lint", "LintFailure", "app.lint_me", "app/lint_me.py:1"),
    ("typecheck", "TypeCheckFailure", "app.typed", "app/typed.py:2"),
    ("timeout", "Timeout", None, None),
    ("memory", "KilledMemory", None, None),
    ("processes", "KilledProcesses", None, None),
    ("unknown", "Unknown", None, None),
])
def test_each_family_is_recognised_from_a_real_run(runs: dict, name: str, error_type: str,
                                                   module: str | None, where: str | None) -> None:
    analysis = analyze_failure(attempt_of(runs[name]))
    assert analysis.error_type == error_type, (name, analysis, runs[name]["result"])
    assert analysis.affected_module == module
    if where:
        assert analysis.location and analysis.location.endswith(where)
    assert analysis.executed and analysis.suggested_fix
    assert analysis.error_pattern.startswith(error_type + "|")


def test_details_name_the_culprit(runs: dict) -> None:
    assert "requestz" in analyze_failure(attempt_of(runs["import"])).suggested_fix
    name = analyze_failure(attempt_of(runs["name"]))
    assert "undefined_helper" in name.error_pattern and "undefined_helper" in name.suggested_fix
    assert "Config.timeout_s" in analyze_failure(attempt_of(runs["attribute"])).error_pattern
    test = analyze_failure(attempt_of(runs["test"]))
    assert test.failing_tests and all("test_add" in t for t in test.failing_tests)
    junit_only = analyze_failure({"exit_code": 1, "junit_xml": runs["test"]["junit"]})
    assert junit_only.error_type == "AssertionError" and "test_add" in junit_only.error_pattern
    lint = analyze_failure(attempt_of(runs["lint"]))
    assert "F401" in lint.error_pattern


def test_smoke_and_deploy_failures_by_stage(runs: dict) -> None:
    smoke = analyze_failure({**vars(runs["smoke"]["result"]), "stage": "smoke"})
    deploy = analyze_failure({**vars(runs["deploy"]["result"]), "stage": "deploy"})
    assert runs["smoke"]["result"].exit_code != 0
    assert smoke.error_type == "SmokeTestFailure" and "smoke test" in smoke.suggested_fix
    assert deploy.error_type == "DeployFailure" and "artifact" in deploy.message


def test_same_mistake_same_signature(runs: dict) -> None:
    # the same undefined helper on another line of another file, and a message with a fresh address
    a, b = analyze_failure(attempt_of(runs["name"])), analyze_failure(attempt_of(runs["name_shifted"]))
    assert a.location != b.location
    assert a.error_pattern == b.error_pattern
    v1, v2 = (analyze_failure(attempt_of(runs[k])) for k in ("value", "value_again"))
    assert runs["value"]["result"].stderr != runs["value_again"]["result"].stderr  # the addresses differ
    assert v1.error_pattern == v2.error_pattern
    assert analyze_failure(attempt_of(runs["import"])).error_pattern != analyze_failure(
        attempt_of(runs["name"])).error_pattern


def test_normalize_message_strips_paths_numbers_addresses_literals() -> None:
    raw = "KeyError at /tmp/sbx-91a/app/x.py line 42: 'user_17' missing from <Obj at 0x7f3a9c> (3.5s)"
    assert normalize_message(raw) == "KeyError at <path> line <n>: <str> missing from <Obj at <hex>> (<n>s)"


# -- knowledge base -----------------------------------------------------------------------------


def test_store_dedupes_by_signature(store, runs: dict) -> None:
    kb = FailureKnowledgeBase(store)
    first = kb.store_failure(attempt_of(runs["name"], feature_id="cart", agent="claude", attempt_id="a1"))
    second = kb.store_failure(attempt_of(runs["name_shifted"], feature_id="checkout", agent="aider",
                                         attempt_id="a2"))
    other = kb.store_failure(attempt_of(runs["import"], feature_id="cart", agent="claude", attempt_id="a3"))
    assert first == second and other != first
    pattern = kb.get(first)
    assert pattern["count"] == 2 and pattern["features"] == ["cart", "checkout"]
    assert pattern["agents"] == ["claude", "aider"] and pattern["first_seen"] <= pattern["last_seen"]
    assert [e["event"] for e in pattern["events"]] == ["seen", "seen"]
    assert store.scalar("SELECT count(*) FROM learned_patterns") == 2


def test_refuses_failures_without_an_executed_run(store) -> None:
    kb = FailureKnowledgeBase(store)
    reflected = AgentAttempt(feature_id="f", tests_failed=3, reflection="I think the import of numpy broke",
                             failure_analysis=analyze_failure({"text": ""}))
    assert kb.store_failure(reflected) is None
    assert kb.store_failure(AgentAttempt(feature_id="f", exit_code=0, test_output="3 passed")) is None
    assert store.scalar("SELECT count(*) FROM learned_patterns") == 0


def _kb_with_patterns(store, runs: dict) -> tuple[FailureKnowledgeBase, dict[str, str]]:
    kb = FailureKnowledgeBase(store)
    ids = {
        "import": kb.store_failure(attempt_of(runs["import"], agent="claude", feature_text="http client")),
        "name": kb.store_failure(attempt_of(runs["name"], agent="aider")),
        "type": kb.store_failure(attempt_of(runs["type"], agent="claude")),
        "lint": kb.store_failure(attempt_of(runs["lint"], agent="aider")),
    }
    for _ in range(3):  # the lint failure is the most frequent
        kb.store_failure(attempt_of(runs["lint"], agent="aider"))
    return kb, ids


def test_retrieval_prefers_same_agent_and_module(store, runs: dict) -> None:
    kb, ids = _kb_with_patterns(store, runs)
    for_claude = [x.pattern_id for x in kb.get_relevant_learnings(LearningContext(agent="claude"))]
    assert set(for_claude) == {ids["import"], ids["type"]}
    on_names = kb.get_relevant_learnings({"agent": "claude", "module": "app.names",
                                          "feature_text": "sum the cart items"})
    assert on_names[0].pattern_id == ids["name"]  # same module beats same agent
    everything = kb.get_relevant_learnings()
    assert everything[0].pattern_id == ids["lint"] and len(everything) == 4
    line = everything[0].as_prompt()
    assert "seen 4x" in line and "F401" in line and "\n" not in line


def test_retrieval_caps_at_ten(store) -> None:
    kb = FailureKnowledgeBase(store)
    for i in range(14):
        kb.store_failure(AgentAttempt(feature_id="f", agent="a", exit_code=1,
                                      test_output=f"ModuleNotFoundError: No module named 'pkg{i}'"))
    assert len(kb.get_relevant_learnings({"agent": "a"})) == 10


def test_weight_up_down_and_retire(store, runs: dict) -> None:
    kb, ids = _kb_with_patterns(store, runs)
    passed = AgentAttempt(feature_id="f1", exit_code=0, tests_passed=4, attempt_id="ok")
    assert kb.record_outcome([ids["import"], ids["name"]], passed) == {ids["import"]: "helped", ids["name"]: "helped"}
    assert kb.get(ids["import"])["weight"] == pytest.approx(1.25)
    # failing differently leaves the weight alone; failing the same way lowers it until retired
    other = attempt_of(runs["type"])
    assert kb.record_outcome([ids["name"]], other) == {ids["name"]: "shown"}
    assert kb.get(ids["name"])["weight"] == pytest.approx(1.25)
    for _ in range(3):
        kb.record_outcome([ids["name"]], attempt_of(runs["name_shifted"]))
    name = kb.get(ids["name"])
    assert name["weight"] == pytest.approx(1.25 * 0.6 ** 3) and name["retired"]
    assert name["shown"] == 5 and name["helped"] == 1
    assert ids["name"] not in [x.pattern_id for x in kb.get_relevant_learnings()]
    assert [e["event"] for e in name["events"]].count("repeated") == 3


def test_stats_and_cli(store, runs: dict, capsys: pytest.CaptureFixture[str]) -> None:
    kb = FailureKnowledgeBase(store)
    week_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=7)
    pid = kb.store_failure(attempt_of(runs["import"]), now=week_ago)
    kb.store_failure(attempt_of(runs["import"]))
    kb.store_failure(attempt_of(runs["value"]))
    now = dt.datetime.now(dt.UTC)
    store.insert_rows("attempts", [
        {"attempt_id": f"a{i}", "run_id": "r", "feature_id": "f", "iteration": it, "status": st, "started_at": now}
        for i, (it, st) in enumerate([(1, "failed"), (1, "failed"), (1, "passed"), (2, "passed"), (2, "failed")])])
    stats = learning_stats(store)
    assert stats["repeated_failure_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert [w["new_patterns"] for w in stats["patterns_per_week"]] == [1, 1]
    assert [(r["iteration"], r["success_rate"]) for r in stats["success_rate_by_iteration"]] == [
        (1, pytest.approx(1 / 3, abs=1e-3)), (2, 0.5)]
    assert main(["learn", "stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["failures"] == 3
    assert main(["learn", "list", "--json"]) == 0
    assert {p["pattern_id"] for p in json.loads(capsys.readouterr().out)["patterns"]} >= {pid}
    assert main(["learn", "show", pid]) == 0
    assert "ModuleNotFoundError" in capsys.readouterr().out
    assert main(["learn", "show", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_a_knowledge_base_without_a_store_uses_the_configured_file(store, runs: dict[str, dict]) -> None:
    kb = FailureKnowledgeBase()  # no store given: the code resolves FIBREFLOW_DB (set per test by conftest)
    assert Path(kb.store.path) == Path(store.path)
    pid = kb.store_failure(attempt_of(runs["import"], attempt_id="cfg1"))
    assert pid is not None
    assert store.scalar("SELECT count(*) FROM learned_patterns WHERE pattern_id = ?", [pid]) == 1


NAME_ERROR = ('Traceback (most recent call last):\n  File "/repo/app/names.py", line 4, in total\n'
              "    return sum(items) + undefined_helper(items)\nNameError: name 'undefined_helper' is not defined\n")


def test_a_pattern_takes_credit_only_for_attempts_of_its_feature_or_module(store) -> None:
    from fibreflow.learning.credit import modules_touched
    from fibreflow.learning.report import load_learning_data

    kb = FailureKnowledgeBase(store)
    pid = kb.store_failure(AgentAttempt(feature_id="cart", agent="claude", exit_code=1, test_output=NAME_ERROR,
                                        attempt_id="a0"))
    assert kb.get(pid)["affected_module"] == "app.names"
    touching = "diff --git a/app/names.py b/app/names.py\n--- a/app/names.py\n+++ b/app/names.py\n@@ -1 +1 @@\n"
    elsewhere = "diff --git a/docs/readme.md b/docs/readme.md\n--- a/docs/readme.md\n+++ b/docs/readme.md\n"
    assert modules_touched(touching) == {"app.names"}
    attempts = [AgentAttempt(feature_id=f, agent="claude", exit_code=0, tests_passed=2, attempt_id=f"a-{f}", diff=d)
                for f, d in (("cart", ""), ("checkout", touching), ("login", elsewhere), ("search", ""))]
    store.insert_rows("attempts", [{"attempt_id": a.attempt_id, "run_id": "r1", "feature_id": a.feature_id,
                                    "agent": "claude", "status": "passed", "diff": a.diff,
                                    "started_at": dt.datetime.now(dt.UTC)} for a in attempts])
    outcomes = [kb.record_outcome([pid], a)[pid] for a in attempts]
    # its own feature and a feature editing its module count; two unrelated features do not
    assert outcomes == ["helped", "helped", "unrelated", "unrelated"]
    pattern = kb.get(pid)
    assert pattern["shown"] == 2 and pattern["helped"] == 2 and pattern["weight"] == pytest.approx(1.25 ** 2)
    # an older store's unrelated "helped" events are not credited either
    kb_events = [{"pattern_id": pid, "attempt_id": f"x{i}", "feature_id": "billing", "agent": "claude",
                  "event": event, "event_at": dt.datetime.now(dt.UTC)} for i in range(12) for event in ("shown", "helped")]
    from fibreflow.learning.knowledge import insert_pattern_events

    insert_pattern_events(store, kb_events)
    now = dt.datetime.now(dt.UTC)
    data = load_learning_data(store, start=now - dt.timedelta(days=1), end=now + dt.timedelta(minutes=1))
    row = data["patterns"].set_index("pattern_id").loc[pid]
    assert (row["helped"], row["shown"]) == (2, 2)
    assert "helped 2 of the 2 attempts" in data["suggestions"][0]
