"""Tier escalation on tiny recorded tiers: stop when the cheap tier is trustworthy, else escalate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fibreflow.benchmarks._candidates import DATA_DIR
from fibreflow.cli import main

needs_data = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"benchmark data not found at {DATA_DIR}")

RIGHT0 = ("    for i, a in enumerate(numbers):\n        for j, b in enumerate(numbers):\n"
          "            if i != j and abs(a - b) < threshold:\n                return True\n    return False\n")
RIGHT0_SORTED = "    s = sorted(numbers)\n    return any(b - a < threshold for a, b in zip(s, s[1:]))\n"
WRONG2 = ["    return int(number)\n", "    return number - 1\n", "    return round(number)\n"]
WRONG3 = ["    return False\n", "    return sum(operations) < 0\n", "    return True\n"]
RIGHT3 = "    total = 0\n    for op in operations:\n        total += op\n        if total < 0:\n            return True\n    return False\n"
RIGHT2 = ["    return number % 1.0\n", "    return number - int(number)\n", "    return number % 1.0\n"]


def write(path: Path, rows: dict[str, list[str]]) -> Path:
    path.write_text("".join(json.dumps({"task_id": t, "samples": s}) + "\n" for t, s in rows.items()))
    return path


@needs_data
def test_cheap_tier_kept_when_attempts_agree_else_escalated(capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path) -> None:
    cheap = write(tmp_path / "cheap.jsonl", {"HumanEval/0": [RIGHT0, RIGHT0_SORTED, "    return False\n"],
                                             "HumanEval/2": WRONG2})
    strong = write(tmp_path / "strong.jsonl", {"HumanEval/0": [RIGHT0] * 3, "HumanEval/2": RIGHT2})
    code = main(["bench", "escalation", "--json", "--tier", f"cheap={cheap}", "--tier", f"strong={strong}",
                 "--prices", "1,10", "--k", "3", "--trials", "1", "--cache", str(tmp_path / "cache"),
                 "--state-dir", str(tmp_path / "state")])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["stopped_at"] == {"cheap": 0.5, "strong": 0.5} and result["gave_up"] == 0.0
    assert result["solved"] == 1.0 and result["baseline_solved"] == 1.0 and result["quality_ratio"] == 1.0
    assert result["cost"] == (3 + 33) / 2 and result["baseline_cost"] == 30
    assert result["cost_ratio"] == pytest.approx(0.6)


@needs_data
def test_bad_tier_options_are_usage_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["bench", "escalation", "--tier", "cheap", "--json"]) == 2
    assert "NAME=SAMPLES.jsonl" in capsys.readouterr().err
    f = write(tmp_path / "a.jsonl", {"HumanEval/0": [RIGHT0]})
    assert main(["bench", "escalation", "--tier", f"a={f}", "--prices", "1,3", "--json"]) == 2
    assert "2 values for 1 tiers" in capsys.readouterr().err


@needs_data
def test_give_up_keeps_the_cheap_pick_when_no_attempt_has_a_foothold(capsys: pytest.CaptureFixture[str],
                                                                     tmp_path: Path) -> None:
    cheap = write(tmp_path / "cheap.jsonl", {"HumanEval/0": [RIGHT0] * 3, "HumanEval/2": WRONG2})
    strong = write(tmp_path / "strong.jsonl", {"HumanEval/0": [RIGHT0] * 3, "HumanEval/2": RIGHT2})
    code = main(["bench", "escalation", "--json", "--tier", f"cheap={cheap}", "--tier", f"strong={strong}",
                 "--prices", "1,10", "--k", "3", "--trials", "1", "--give-up", "0", "--cache",
                 str(tmp_path / "cache"), "--state-dir", str(tmp_path / "state")])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    # HumanEval/2: every cheap attempt fails every example, so the strong tier is never bought
    assert result["gave_up"] == 0.5 and result["stopped_at"] == {"cheap": 1.0, "strong": 0.0}
    assert result["cost"] == 3 and result["solved"] == 0.5 and result["quality_ratio"] == 0.5
    assert result["rule"] == {"agree": [2], "give_up_at_best_fraction": [0.0]}
    assert result["split"]["even"]["draws"] == 2 and result["split"]["odd"]["draws"] == 0


def test_calibration_scores_each_half_with_the_rule_tuned_on_the_other() -> None:
    from fibreflow.benchmarks._stoprule import Rule, TierState, Trace, calibrate

    right, wrong = TierState(True, 3, 3, 1.0, True), TierState(False, 1, 0, 0.0, False)
    fixed = TierState(True, 3, 3, 1.0, True)
    traces = [Trace("HumanEval/0", (right, right), True), Trace("HumanEval/1", (right, right), True),
              Trace("HumanEval/2", (wrong, fixed), True), Trace("HumanEval/3", (wrong, wrong), False)]
    cal = calibrate(traces, [1.0, 10.0], 3, target=0.98)
    even, odd = cal["folds"]
    # on the even half HumanEval/2 needs the strong tier, so that rule never gives up; on the odd half
    # giving up costs nothing, so that rule does
    assert even["tuned_on"] == "even" and even["met_on_tune"] and even["rule"].give_up == (None,)
    assert odd["tuned_on"] == "odd" and odd["met_on_tune"] and odd["rule"].give_up != (None,)
    assert even["heldout"] == {**even["heldout"], "solved": 0.5, "cost": (3 + 33) / 2, "draws": 2}
    assert odd["heldout"]["solved"] == 0.5 and odd["heldout"]["cost"] == 3
    # cross-fitted: the odd rule's over-confident give-up costs HumanEval/2, which it never saw
    crossfit = cal["crossfit"]
    assert crossfit["draws"] == 4 and crossfit["solved"] == 0.5 and crossfit["cost"] == (3 + 33 + 3 + 3) / 4
    assert crossfit["baseline_solved"] == 0.75 and crossfit["quality_ratio"] == pytest.approx(0.6667)
    assert Rule((2,), (0.0,)).decide(0, wrong) == "give_up" and Rule((2,), (None,)).decide(0, wrong) == "escalate"


def test_published_pass_rates_become_log_odds_shifts() -> None:
    from fibreflow.benchmarks.escalation import emulated_odds
    from fibreflow.errors import ConfigError

    names, odds = emulated_odds("haiku=50%,sonnet=75%,opus=90%")
    assert names == ["haiku", "sonnet", "opus"] and odds == pytest.approx([1.0, 3.0, 9.0])
    assert emulated_odds("cheap=1, strong=10") == (["cheap", "strong"], [1.0, 10.0])
    for bad, words in (("a=1,b=80%", "every tier"), ("a=100%", "a=100%"), ("a=-2", "a=-2"), ("a", "NAME=ODDS")):
        with pytest.raises(ConfigError, match=words):
            emulated_odds(bad)


@needs_data
def test_emulated_tiers_from_pass_rates_with_cross_fitted_rules(capsys: pytest.CaptureFixture[str],
                                                               tmp_path: Path) -> None:
    samples = write(tmp_path / "samples.jsonl", {"HumanEval/0": [RIGHT0, "    return False\n", "    return True\n"],
                                                 "HumanEval/3": [*WRONG3, RIGHT3]})
    code = main(["bench", "escalation", "--json", "--samples", str(samples), "--emulate",
                 "cheap=0.01%,strong=99.99%", "--prices", "1,10", "--k", "2", "--trials", "3", "--calibrate",
                 "--cache", str(tmp_path / "cache"), "--state-dir", str(tmp_path / "state")])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["emulated"] and result["odds"] == [1.0, pytest.approx(1e8, rel=1e-3)]
    # the strong tier's odds make its best-of-2 always hold the one right sample of each task
    assert result["baseline_solved"] == 1.0 and result["baseline_cost"] == 20 and result["draws"] == 6
    assert [f["tuned_on"] for f in result["calibration"]["folds"]] == ["even", "odd"]
    crossfit_draws = sum(f["heldout"]["draws"] for f in result["calibration"]["folds"])
    assert crossfit_draws == result["draws"] and result["rule"].startswith("cross-fitted")
    assert all(f["heldout"]["draws"] == 3 for f in result["calibration"]["folds"])
    assert result["cost_ratio"] == pytest.approx(result["cost"] / 20, abs=1e-4)
