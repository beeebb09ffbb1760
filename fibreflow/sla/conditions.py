"""Alert conditions: a small, safe expression language over SLA values (never ``eval``).

Grammar (Python's syntax, a whitelisted subset of its AST)::

    neon_to_convex_max_delay > 300
    0 < vlm_image_max_age <= 600 and not (delivery_reports_fresh < 60)
    (a + b) / 2 > 120 or -c > 5
    status(qfield_sync) == "error" or status(qfield_sync) in ("violation", "error")

* names are SLA names (Python identifiers); their values come from the latest check results;
* numbers, ``+ - * /``, unary ``-``/``+``, parentheses;
* comparisons ``< <= > >= == !=``, chained (``0 < x <= 5``);
* ``and``, ``or``, ``not``;
* ``status(NAME)`` compared with a string (``==``, ``!=``, ``in``/``not in`` a tuple of strings).

A missing or ``None`` value (source unreadable, SLA not measured yet) makes arithmetic ``None``
and every comparison involving it ``False``; division by zero is ``None`` too. Anything else
(attributes, calls other than ``status``, subscripts, lambdas, ``**``, strings outside a status
comparison, ...) raises ConditionError naming the token and its column.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fibreflow.errors import ConditionError

MAX_LENGTH = 1000
_MAX_DEPTH = 50
_TOKEN = re.compile(r"[A-Za-z_]\w*|\d[\w.]*|[<>=!]=|\*\*|//|\S")

_Values = Mapping[str, float | None]
_Statuses = Mapping[str, str]
_Node = Callable[[_Values, _Statuses], object]
#: A node with a numeric value: a number, arithmetic, or a truth value (``bool`` counts as a number).
_Num = Callable[[_Values, _Statuses], float | None]

_COMPARE: dict[type[ast.cmpop], tuple[str, Callable[[Any, Any], bool]]] = {
    ast.Lt: ("<", operator.lt), ast.LtE: ("<=", operator.le), ast.Gt: (">", operator.gt),
    ast.GtE: (">=", operator.ge), ast.Eq: ("==", operator.eq), ast.NotEq: ("!=", operator.ne),
}
_ARITH: dict[type[ast.operator], str] = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/"}
_OP_TOKENS: dict[type[ast.AST], str] = {
    ast.Pow: "**", ast.Mod: "%", ast.FloorDiv: "//", ast.MatMult: "@", ast.LShift: "<<",
    ast.RShift: ">>", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^", ast.Invert: "~",
    ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in",
}


@dataclass(frozen=True)
class Condition:
    """A parsed condition: ``names`` it reads and ``evaluate`` over the latest values."""

    text: str
    names: frozenset[str]
    order: tuple[str, ...] = field(compare=False)
    _fn: _Node = field(repr=False, compare=False)

    @property
    def primary(self) -> str | None:
        """The first SLA name in the text: the one a notification is about."""
        return self.order[0] if self.order else None

    def evaluate(self, values: _Values, *, statuses: _Statuses | None = None) -> bool:
        """True when the condition holds; missing values make their comparisons False."""
        return bool(self._fn(values, statuses or {}))

    def is_known(self, values: _Values) -> bool:
        """True when every SLA the condition reads has a value (so False really means clear)."""
        return all(values.get(n) is not None for n in self.names)


def parse_condition(text: str) -> Condition:
    """Parse ``text`` into a Condition; invalid input raises ConditionError naming the token."""
    if not isinstance(text, str) or not text.strip():
        raise ConditionError("empty alert condition", condition=str(text), position=0)
    if len(text) > MAX_LENGTH:
        raise ConditionError(f"alert condition longer than {MAX_LENGTH} characters",
                             condition=text[:80], position=MAX_LENGTH)
    source = " ".join(text.splitlines())
    try:
        tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as exc:
        stripped = source.strip()
        col = (exc.offset or 0) - 1
        match = _TOKEN.match(stripped, col) if 0 <= col < len(stripped) else None
        if match is None:
            col = len(stripped)
            raise ConditionError(f"invalid alert condition {text!r}: unexpected end of condition at column "
                                 f"{col + 1} (a value is missing)", condition=text, token="", position=col
                                 ) from None
        token = match.group(0)
        raise ConditionError(f"invalid alert condition {text!r}: {exc.msg} at column {col + 1}, "
                             f"token {token!r}", condition=text, token=token, position=col) from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise ConditionError(f"invalid alert condition {text!r}: {exc}", condition=text) from None
    compiler = _Compiler(source.strip())
    fn = compiler.compile(tree.body, depth=0, truthy=True)
    order = tuple(dict.fromkeys(compiler.names))
    return Condition(text=text, names=frozenset(order), order=order, _fn=fn)


class _Compiler:
    """Turns a whitelisted AST into nested closures; anything not whitelisted is an error."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.names: list[str] = []

    def fail(self, node: ast.AST, token: str, why: str) -> ConditionError:
        col = getattr(node, "col_offset", 0)
        return ConditionError(f"invalid alert condition {self.text!r}: {why} {token!r} at column {col + 1}",
                              condition=self.text, token=token, position=col)

    def fail_between(self, left: ast.AST, right: ast.AST, token: str, why: str) -> ConditionError:
        """An error about the operator ``token`` written between ``left`` and ``right``."""
        start = getattr(left, "end_col_offset", None) or 0
        found = self.text.find(token, start, getattr(right, "col_offset", len(self.text)))
        col = found if found >= 0 else start
        return ConditionError(f"invalid alert condition {self.text!r}: {why} {token!r} at column {col + 1}",
                              condition=self.text, token=token, position=col)

    def segment(self, node: ast.AST) -> str:
        return ast.get_source_segment(self.text, node) or type(node).__name__

    def compile(self, node: ast.AST, *, depth: int, truthy: bool = False) -> _Num:
        if depth > _MAX_DEPTH:
            raise self.fail(node, self.segment(node)[:20], "expression nested too deeply at")
        d = depth + 1
        if isinstance(node, ast.BoolOp):
            parts = [self.compile(v, depth=d, truthy=True) for v in node.values]
            if isinstance(node.op, ast.And):
                return lambda v, s: all(p(v, s) for p in parts)
            return lambda v, s: any(p(v, s) for p in parts)
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                inner = self.compile(node.operand, depth=d, truthy=True)
                return lambda v, s: not inner(v, s)
            if isinstance(node.op, ast.USub | ast.UAdd):
                num = self.number(node.operand, depth=d)
                sign = -1.0 if isinstance(node.op, ast.USub) else 1.0
                return lambda v, s: None if (x := num(v, s)) is None else sign * x
            raise self.fail(node, _OP_TOKENS.get(type(node.op), type(node.op).__name__), "unsupported operator")
        if isinstance(node, ast.Compare):
            return self.compare(node, depth=d)
        if truthy:
            if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id == "status"):
                raise self.fail(node, self.segment(node.func), "only status(NAME) may be called, not")
            if isinstance(node, ast.Name | ast.Constant | ast.BinOp | ast.Call):
                raise self.fail(node, self.segment(node), "a condition must compare values, not just")
            raise self.fail(node, self.segment(node), "unsupported expression")
        return self.number(node, depth=d)

    def number(self, node: ast.AST, *, depth: int) -> _Num:
        d = depth + 1
        if isinstance(node, ast.Name):
            if node.id == "status":
                raise self.fail(node, node.id, "'status' is a function, call it as status(NAME), not")
            name = node.id
            self.names.append(name)
            return lambda v, s: _num(v.get(name))
        if isinstance(node, ast.Constant):
            if isinstance(node.value, bool) or not isinstance(node.value, int | float):
                raise self.fail(node, self.segment(node), "unsupported literal")
            try:
                value = float(node.value)
            except OverflowError:
                raise self.fail(node, self.segment(node)[:20], "number too large:") from None
            return lambda v, s: value
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _ARITH:
                raise self.fail_between(node.left, node.right, _OP_TOKENS.get(type(node.op), "?"),
                                        "unsupported operator")
            left, right = self.number(node.left, depth=d), self.number(node.right, depth=d)
            return _arith(type(node.op), left, right)
        if isinstance(node, ast.UnaryOp | ast.BoolOp | ast.Compare):
            return self.compile(node, depth=d)
        if isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id == "status":
                raise self.fail(node, self.segment(node), "status(NAME) is only compared with a string, not used in")
            raise self.fail(node, self.segment(node.func), "only status(NAME) may be called, not")
        token = {ast.Attribute: ".", ast.Subscript: "[", ast.Lambda: "lambda", ast.NamedExpr: ":=",
                 ast.IfExp: "if"}.get(type(node), self.segment(node))
        raise self.fail(node, token, "unsupported syntax")

    def status_of(self, node: ast.Call) -> _Node:
        if node.keywords or len(node.args) != 1 or not isinstance(node.args[0], ast.Name):
            raise self.fail(node, self.segment(node), "status() takes exactly one SLA name, got")
        name = node.args[0].id
        self.names.append(name)
        return lambda v, s: s.get(name)

    def operand(self, node: ast.AST, *, depth: int) -> tuple[str, _Node]:
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and node.func.id == "status"):
                raise self.fail(node, self.segment(node.func), "only status(NAME) may be called, not")
            return "status", self.status_of(node)
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            return "string", lambda v, s: text
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            items = []
            for elt in node.elts:
                if not (isinstance(elt, ast.Constant) and isinstance(elt.value, str)):
                    raise self.fail(elt, self.segment(elt), "only strings may be listed, not")
                items.append(elt.value)
            frozen = frozenset(items)
            return "strings", lambda v, s: frozen
        return "number", self.number(node, depth=depth)

    def compare(self, node: ast.Compare, *, depth: int) -> _Num:
        operands = (node.left, *node.comparators)
        kinds_fns = [self.operand(n, depth=depth) for n in operands]
        steps: list[tuple[_Node, Callable[[Any, Any], bool], _Node]] = []
        for i, op in enumerate(node.ops):
            (lk, lf), (rk, rf) = kinds_fns[i], kinds_fns[i + 1]
            token = _COMPARE[type(op)][0] if type(op) in _COMPARE else _OP_TOKENS.get(type(op), "?")
            if isinstance(op, ast.In | ast.NotIn):
                if lk != "status" or rk != "strings":
                    raise self.fail_between(operands[i], operands[i + 1], token,
                                            "'in' only tests status(NAME) against a tuple of strings, not")
                member = (lambda a, b: a in b) if isinstance(op, ast.In) else (lambda a, b: a not in b)
                steps.append((lf, member, rf))
                continue
            if type(op) not in _COMPARE:
                raise self.fail_between(operands[i], operands[i + 1], token, "unsupported comparison")
            cmp = _COMPARE[type(op)][1]
            if {lk, rk} & {"status", "string", "strings"}:
                if {lk, rk} != {"status", "string"} or token not in ("==", "!="):
                    raise self.fail_between(operands[i], operands[i + 1], token,
                                            "strings only compare with status(NAME) using == or !=, not")
            elif "strings" in (lk, rk):
                raise self.fail_between(operands[i], operands[i + 1], token, "a tuple cannot be compared with")
            steps.append((lf, cmp, rf))

        def run(v: _Values, s: _Statuses) -> bool:
            for left, cmp, right in steps:
                a, b = left(v, s), right(v, s)
                if a is None or b is None or not cmp(a, b):
                    return False
            return True

        return run


def _num(value: float | None) -> float | None:
    if value is None:
        return None
    try:  # a source may still hand over something float() rejects: it reads as missing
        return float(value)
    except (TypeError, ValueError):
        return None


def _arith(op: type[ast.operator], left: _Num, right: _Num) -> _Num:
    def run(v: _Values, s: _Statuses) -> float | None:
        a, b = left(v, s), right(v, s)
        if a is None or b is None:
            return None
        if op is ast.Add:
            return a + b
        if op is ast.Sub:
            return a - b
        if op is ast.Mult:
            return a * b
        return None if b == 0 else a / b

    return run


__all__ = ["Condition", "parse_condition"]
