"""Scoring, ranking and consensus on hand-built attempts; behaviour measured in real sandboxes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fibreflow.config import SelectionSettings, SelectionWeights, load_settings
from fibreflow.errors import ConfigError
from fibreflow.learning import AgentAttempt
from fibreflow.sandbox.backends import get_backend
from fibreflow.selection import Behaviour, BestOfNSelector, code_quality, select_best, validate_consensus
from fibreflow.selection.pool import SandboxTestPool


def att(aid: str, *, passed: int = 10, failed: int = 0, coverage: float | None = 0.9, quality: float | None = 1.0,
        time_s: float | None = 10.0, diff: str = "") -> AgentAttempt:
    return AgentAttempt(feature_id="f", attempt_id=aid, tests_passed=passed, tests_failed=failed,
                        exit_code=0 if failed == 0 else 1, test_coverage=coverage, code_quality_score=quality,
                        execution_time=time_s, diff=diff)


def new_file_diff(path: str, text: str) -> str:
    lines = text.splitlines()
    return (f"--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{len(lines)} @@\n"
            + "".join(f"+{line}\n" for line in lines))


def test_weighted_score_uses_the_seed_weights() -> None:
    sel = BestOfNSelector(SelectionSettings())
    fast, slow = att("fast", coverage=0.8, quality=0.5, time_s=10), att("slow", passed=8, failed=2, time_s=20)
    ranked = dict((a.attempt_id, s) for a, s in sel.rank([fast, slow]))
    assert ranked["fast"].total == pytest.approx(0.4 * 0.8 + 0.3 * 1.0 + 0.2 * 0.5 + 0.1 * 1.0)
    assert ranked["slow"].total == pytest.approx(0.4 * 0.9 + 0.3 * 0.8 + 0.2 * 1.0 + 0.1 * 0.5)
    assert ranked["fast"].components == {"code_quality": 0.5, "coverage": 0.8, "speed": 1.0, "tests_passed": 1.0}


def test_weights_come_from_config(tmp_path: Path) -> None:
    cfg = tmp_path / "fibreflow.yaml"
    cfg.write_text("selection:\n  weights: {coverage: 0, tests_passed: 0, code_quality: 0, speed: 1}\n"
                   "  consensus_top_k: 2\n")
    settings = load_settings(cfg).selection
    assert settings.consensus_top_k == 2 and settings.consensus_threshold == 0.7 and settings.coverage_floor == 0.95
    sel = BestOfNSelector(settings)
    ranked = sel.rank([att("slow", coverage=1.0, time_s=30), att("fast", coverage=0.1, time_s=10)])
    assert [a.attempt_id for a, _ in ranked] == ["fast", "slow"]
    assert ranked[1][1].total == pytest.approx(1 / 3)
    cfg.write_text("selection:\n  weights: {coverage: -1}\n")
    with pytest.raises(ConfigError, match="selection.weights.coverage"):
        load_settings(cfg)


def test_failing_tests_never_outrank_passing() -> None:
    sel = BestOfNSelector(SelectionSettings(weights=SelectionWeights()))
    failing = att("failing", passed=99, failed=1, coverage=1.0, quality=1.0, time_s=1)
    weak = att("weak-but-green", passed=1, coverage=0.05, quality=0.0, time_s=100)
    worse = att("more-failures", passed=50, failed=50, coverage=1.0, time_s=1)
    ranked = [a.attempt_id for a, _ in sel.rank([failing, worse, weak])]
    assert ranked == ["weak-but-green", "failing", "more-failures"]
    assert sel.score_attempt(failing).total > sel.score_attempt(weak).total  # it is the order, not the score
    selection = sel.select_best([failing, worse])
    assert selection.needs_review and "no attempt passed" in selection.reason


def test_unmeasured_parts_are_left_out_and_missing_ones_count_zero() -> None:
    sel = BestOfNSelector(SelectionSettings())
    alone = sel.score_attempt(att("a", coverage=None, quality=None, time_s=None))
    assert alone.components == {"tests_passed": 1.0} and alone.total == 1.0
    ranked = dict((a.attempt_id, s) for a, s in sel.rank([att("a", coverage=None), att("b", coverage=0.5)]))
    assert ranked["a"].components["coverage"] == 0.0 and ranked["b"].total > ranked["a"].total


def test_quality_from_ruff_findings_per_changed_line() -> None:
    clean = new_file_diff("app/calc.py", "def add(a, b):\n    return a + b\n")
    messy = new_file_diff("app/calc.py", "import os\nimport sys\n\n\ndef add(a, b):\n    return a + b\n")
    assert code_quality(clean) == 1.0
    assert code_quality(messy) == pytest.approx(1 / (1 + 10 * 2 / 6))
    assert code_quality("--- a/README.md\n+++ b/README.md\n@@ -1 +1 @@\n-x\n+y\n") is None
    sel = BestOfNSelector(SelectionSettings())
    a, b = att("clean", quality=None, diff=clean), att("messy", quality=None, diff=messy)
    assert [x.attempt_id for x, _ in sel.rank([b, a])] == ["clean", "messy"]


# -- consensus --------------------------------------------------------------------------------

CORRECT = "def slug(s):\n    return '-'.join(s.lower().split())\n"
ALSO_CORRECT = "import re\n\n\ndef slug(s):\n    return re.sub(r'\\s+', '-', s.strip()).lower()\n"
WRONG = "def slug(s):\n    return s.lower().replace(' ', '-')\n"
FEATURE_TEST = "from slug import slug\n\n\ndef test_basic():\n    assert slug('Hello World') == 'hello-world'\n"
EDGE_TESTS = ("from slug import slug\n\n\ndef test_spaces():\n    assert slug('a  b') == 'a-b'\n\n\n"
              "def test_trailing():\n    assert slug(' a b ') == 'a-b'\n")
MORE_TESTS = "from slug import slug\n\n\ndef test_upper():\n    assert slug('ABC') == 'abc'\n"


@pytest.fixture
def sandboxes(tmp_path: Path) -> Iterator[dict[str, object]]:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("slug feature\n")
    backend = get_backend("local", state_dir=tmp_path / "state")
    boxes = {aid: backend.create(repo, "quick") for aid in ("a1", "a2", "a3", "a4")}
    yield boxes
    for box in boxes.values():
        box.close()


def _attempts(sandboxes: dict, codes: dict[str, str]) -> list[AgentAttempt]:
    attempts = []
    for aid, code in codes.items():
        sandboxes[aid].write_files({"slug.py": code})
        tests = {"a1": {"tests/test_edges.py": EDGE_TESTS}, "a2": {"tests/test_more.py": MORE_TESTS}}.get(aid, {})
        attempts.append(AgentAttempt(feature_id="slug", attempt_id=aid, tests_passed=1, exit_code=0,
                                     test_coverage=1.0, code_quality_score=1.0, execution_time=5.0,
                                     diff=sandboxes[aid].diff(), artifacts={"tests": tests}))
    return attempts


def test_consensus_when_the_top_attempts_behave_alike(sandboxes: dict) -> None:
    attempts = _attempts(sandboxes, {"a1": CORRECT, "a2": ALSO_CORRECT, "a3": CORRECT})
    runner = SandboxTestPool(sandboxes, feature_tests={"tests/test_slug.py": FEATURE_TEST})
    selection = select_best(attempts, runner=runner)
    assert selection.consensus.method == "behaviour" and selection.consensus.agreed
    assert selection.consensus.agreement == 1.0 and not selection.needs_review
    assert len(selection.behaviour.outcomes["a1"]) == 4  # the feature's test + 3 written by attempts


def test_no_consensus_flags_review_and_keeps_the_best(sandboxes: dict) -> None:
    attempts = _attempts(sandboxes, {"a1": WRONG, "a2": CORRECT, "a3": WRONG, "a4": ALSO_CORRECT})
    runner = SandboxTestPool(sandboxes, feature_tests={"tests/test_slug.py": FEATURE_TEST})
    behaviour = runner(attempts)
    assert behaviour.outcomes["a1"] == behaviour.outcomes["a3"] != behaviour.outcomes["a2"]
    selection = select_best(attempts, behaviour=behaviour)
    # equal scores: behaviour decides, and the pair passing more of the pool wins over the input order
    assert selection.winner.attempt_id in ("a2", "a4")
    assert selection.consensus.members[:2] == ("a2", "a4")
    assert not selection.consensus.agreed and selection.consensus.agreement == pytest.approx(0.5)
    assert selection.needs_review and "no consensus" in selection.reason


def test_consensus_thresholds_from_settings_and_diff_fallback() -> None:
    same = new_file_diff("slug.py", CORRECT)
    other = new_file_diff("slug.py", "class Slugger:\n    pass\n\n\nVALUE = 3\n")
    trio = [att("x", diff=same), att("y", diff=same), att("z", diff=same)]
    assert validate_consensus(trio).method == "diff" and validate_consensus(trio).agreed
    assert not validate_consensus([att("x", diff=same), att("y", diff=same), att("z", diff=other)]).agreed
    pair = BestOfNSelector(SelectionSettings()).validate_consensus(trio[:2])
    assert not pair.agreed and "only 2" in pair.detail
    loose = BestOfNSelector(SelectionSettings(consensus_top_k=2, consensus_threshold=0.5))
    behaviour = Behaviour(outcomes={"x": ["1", "2", "3", "4"], "y": ["1", "2", "0", "0"], "z": ["9"] * 4})
    assert loose.validate_consensus(trio, behaviour=behaviour).agreed
    assert not BestOfNSelector(SelectionSettings()).validate_consensus(trio, behaviour=behaviour).agreed
    assert select_best([]).needs_review and select_best([]).winner is None
