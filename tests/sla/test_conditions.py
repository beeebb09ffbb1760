"""The safe condition evaluator: what it accepts, what it computes, and what it refuses."""

from __future__ import annotations

import ast
import contextlib
import inspect
from pathlib import Path

import pytest

from fibreflow.errors import ConditionError
from fibreflow.sla import conditions
from fibreflow.sla.conditions import parse_condition


@pytest.mark.parametrize(("text", "values", "expected"), [
    ("lag > 300", {"lag": 301}, True),
    ("lag > 300", {"lag": 300}, False),
    ("lag >= 300", {"lag": 300}, True),
    ("lag == 5", {"lag": 5.0}, True),
    ("lag != 5", {"lag": 4}, True),
    ("0 < lag <= 300", {"lag": 300}, True),
    ("0 < lag <= 300", {"lag": 0}, False),
    ("0 < lag <= 300", {"lag": 301}, False),
    ("a > 10 and b > 10", {"a": 11, "b": 9}, False),
    ("a > 10 or b > 10", {"a": 11, "b": 9}, True),
    ("not (a > 10)", {"a": 5}, True),
    ("(a + b) / 2 > 120", {"a": 200, "b": 100}, True),
    ("a * 2 - b < 0", {"a": 1, "b": 3}, True),
    ("-a > 5", {"a": -10}, True),
    ("+a > 5", {"a": 6}, True),
    ("a > 1e3", {"a": 1001}, True),
    ("a > 1 and (b < 2 or not c >= 3)", {"a": 2, "b": 5, "c": 1}, True),
])
def test_evaluates(text: str, values: dict[str, float], expected: bool) -> None:
    assert parse_condition(text).evaluate(values) is expected


def test_names_order_and_primary() -> None:
    cond = parse_condition("neon_delay > 300 or vlm_age > 600 and neon_delay < 10000")
    assert cond.names == frozenset({"neon_delay", "vlm_age"})
    assert cond.order == ("neon_delay", "vlm_age")
    assert cond.primary == "neon_delay"


def test_missing_or_none_values_make_comparisons_false() -> None:
    cond = parse_condition("lag > 300")
    assert cond.evaluate({}) is False
    assert cond.evaluate({"lag": None}) is False
    assert parse_condition("lag + 1 > 0").evaluate({"lag": None}) is False
    assert parse_condition("a / b > 1").evaluate({"a": 5, "b": 0}) is False  # no ZeroDivisionError
    assert parse_condition("0 < lag < 5").evaluate({"lag": None}) is False
    assert cond.is_known({"lag": 1}) and not cond.is_known({"lag": None}) and not cond.is_known({})


def test_status_function() -> None:
    cond = parse_condition('status(src) == "error" or lag > 300')
    assert cond.names == frozenset({"src", "lag"})
    assert cond.evaluate({"lag": 1}, statuses={"src": "error"}) is True
    assert cond.evaluate({"lag": 1}, statuses={"src": "ok"}) is False
    assert cond.evaluate({"lag": 1}) is False
    member = parse_condition("status(src) in ('violation', 'error')")
    assert member.evaluate({}, statuses={"src": "violation"}) is True
    assert member.evaluate({}, statuses={"src": "warn"}) is False
    assert parse_condition("status(src) not in ('ok',)").evaluate({}, statuses={"src": "warn"}) is True
    assert parse_condition("status(src) != 'ok'").evaluate({}, statuses={}) is False


@pytest.mark.parametrize(("text", "token", "column"), [
    ("lag >", "", 6),
    ("lag > > 1", ">", 7),
    ("lag ** 2 > 1", "**", 5),
    ("lag >> 2 > 1", ">>", 5),
    ("lag % 2 > 1", "%", 5),
    ("lag // 2 > 1", "//", 5),
    ("lag is 1", "is", 5),
    ("lag in ('a',)", "in", 5),
    ("lag > $", "$", 7),
    ("(lag > 1", "(", 1),
    ("lag > 1)", ")", 8),
    ("lag > 1 and and x > 2", "and", 13),
    ("lag", "lag", 1),
    ("lag > 1 and x", "x", 13),
    ("lag > 'slow'", ">", 5),
    ("status(x) > 1", ">", 11),
    ("status(x, y) == 'ok'", "status(x, y)", 1),
    ("lag > True", "True", 7),
    ("lag.real > 1", ".", 1),
    ("lag[0] > 1", "[", 1),
    ("lag if x else y", "lag if x else y", 1),
    ("lag == (1, 2)", "1", 9),
    ("lag =1", "=", 5),
])
def test_bad_conditions_name_the_token(text: str, token: str, column: int) -> None:
    with pytest.raises(ConditionError) as info:
        parse_condition(text)
    err = info.value
    assert err.token == token
    assert err.position == column - 1
    assert f"column {column}" in str(err)
    if token:
        assert repr(token) in str(err)
    else:
        assert "end of condition" in str(err)


@pytest.mark.parametrize("text", ["", "   ", "x" * 1001 + " > 1"])
def test_empty_or_huge_conditions(text: str) -> None:
    with pytest.raises(ConditionError):
        parse_condition(text)


@pytest.mark.parametrize("text", [
    "__import__('os').system('touch {marker}') > 0",
    "__import__('os')",
    "eval('1') > 0",
    "exec('open(\"{marker}\", \"w\")')",
    "open('{marker}', 'w') == 'x'",
    "().__class__.__bases__[0].__subclasses__() > 0",
    "lag.__class__ > 1",
    "(lambda: __import__('os'))() > 0",
    "[x for x in ()] > 0",
    "globals() > 0",
    "status(lag).upper() == 'OK'",
    "(y := 5) > 1",
    "f'{{lag}}' == 'x'",
])
def test_injection_attempts_are_rejected(text: str, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = text.format(marker=marker)
    if "{marker}" in text:  # control: evaluated by Python itself, the payload does write the marker
        control = tmp_path / "control"
        with contextlib.suppress(Exception):
            result = eval(text.format(marker=control))  # noqa: S307 - the control a safe evaluator must not match
            if hasattr(result, "close"):
                result.close()
        assert control.exists()
    with pytest.raises(ConditionError):
        parse_condition(hostile)
    # the evaluator, given the payload as data (a value, a status), compares it and runs nothing
    cond = parse_condition("lag > 0 or lag + 1 > 1 or status(src) == 'ok' or status(src) in ('ok',)")
    assert cond.evaluate({"lag": hostile}, statuses={"src": hostile}) is False  # type: ignore[dict-item]
    assert not marker.exists()


def test_module_never_calls_eval_exec_or_compile() -> None:
    tree = ast.parse(inspect.getsource(conditions))
    called = {node.func.id for node in ast.walk(tree)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not called & {"eval", "exec", "compile", "__import__"}


def test_names_are_looked_up_only_in_the_values() -> None:
    # a name shaped like a builtin is just an SLA name with no value
    cond = parse_condition("__builtins__ > 0 or print > 1")
    assert cond.names == frozenset({"__builtins__", "print"})
    assert cond.evaluate({}) is False
    assert cond.evaluate({"print": 2}) is True
