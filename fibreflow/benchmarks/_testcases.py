"""Tests of a HumanEval task as an agent sees them: docstring examples and model-written asserts.

Docstring examples come in many styles (``>>>`` sessions, ``f(x) == y``, ``f(x) ➞ y``,
"for x = V the output should be Y", ``Input:``/``Output:`` blocks); model-written asserts are
often empty or placeholders (``assert f(x) == ____``) and are filtered. ``augment_inputs`` derives
more inputs from the literal arguments of known calls, for comparing behaviour (not correctness).
"""

from __future__ import annotations

import ast
import builtins
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

_ARROWS = ("==>", "=>", "->", "➞", "==", "=", "# returns", "# =>", "returns", "should return",
           "return", "#")
_PLACEHOLDER = re.compile(r"\b_{2,}\b|\.\.\.|<[a-z ]+>")
_FOR_OUTPUT = re.compile(r"^for (?P<args>\w+ = .+),? the (?:output|result) should be (?P<out>.+)$", re.IGNORECASE)
_DEF = re.compile(r"^def\s+(\w+)\s*\(", re.MULTILINE)
GENERATED_PER_SAMPLE = 10  # CodeT keeps the first few asserts of each generated test sample


@dataclass(frozen=True)
class TestCase:
    """One assert; ``call``/``expected`` are set when it is ``CALL == EXPECTED``."""

    src: str
    call: str | None = None
    expected: str | None = None
    votes: int = 1  # how many independent samples wrote this same assert
    rank: int = 0  # its earliest position within a sample (models put their surest asserts first)

    def to_dict(self) -> dict[str, Any]:
        return {"src": self.src, "call": self.call, "expected": self.expected}


def calls_of(src: str, entry_point: str) -> list[str]:
    """Source of each call of ``entry_point`` in a statement, outermost first."""
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return []
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
             and isinstance(n.func, ast.Name) and n.func.id == entry_point]
    inner = {id(c) for outer in calls for c in ast.walk(outer) if c is not outer}
    return [ast.unparse(c) for c in calls if id(c) not in inner]


def test_case(src: str, entry_point: str) -> TestCase | None:
    """An assert statement as a TestCase; None if it is not a usable test of ``entry_point``."""
    try:
        tree = ast.parse(src)
    except SyntaxError:
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return None
    node = tree.body[0].test
    if _PLACEHOLDER.search(ast.unparse(node)) or not calls_of(ast.unparse(node), entry_point):
        return None
    text = "assert " + ast.unparse(node)
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], ast.Eq):
        left, right = node.left, node.comparators[0]
        for call, expected in ((left, right), (right, left)):
            if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                    and call.func.id == entry_point and not calls_of(ast.unparse(expected), entry_point)):
                return TestCase(text, ast.unparse(call), ast.unparse(expected))
    return TestCase(text)


def generated_tests(samples: Iterable[str], entry_point: str, *,
                    per_sample: int = GENERATED_PER_SAMPLE) -> list[TestCase]:
    """Distinct usable asserts from raw model outputs that continue ``assert `` (placeholders,
    empty outputs and unrelated code are dropped)."""
    seen: dict[str, TestCase] = {}
    for sample in samples:
        kept = 0
        for chunk in re.split(r"(?m)^(?=assert\b)", "assert " + sample):
            chunk = chunk.strip()
            if not chunk.startswith("assert"):
                continue
            case = test_case(chunk, entry_point) or test_case(
                " ".join(line.strip() for line in chunk.splitlines()), entry_point)
            if case is None:
                continue
            if case.src in seen:
                old = seen[case.src]
                seen[case.src] = replace(old, votes=old.votes + 1, rank=min(old.rank, kept))
            else:
                seen[case.src] = replace(case, rank=kept)
            kept += 1
            if kept >= per_sample:
                break
    return list(seen.values())


def docstring_examples(prompt: str, entry_point: str) -> list[TestCase]:
    """The examples a problem's docstring shows: ``>>>`` sessions, ``f(x) == y`` style lines
    (``==>``, ``->``, ``returns``, ``should return`` ...), "for x = V the output should be Y" and
    ``Input:``/``Output:`` blocks. Where the examples call the function by another name (a
    slip in the problem text) and none use the right one, that other name is taken to mean it."""
    found = _examples(prompt, entry_point)
    if not found:
        defined = set(_DEF.findall(prompt)) | set(dir(builtins))
        others = [n for n in re.findall(r"\b([A-Za-z_]\w*)\(", prompt) if n not in defined]
        if others:
            alias = max(dict.fromkeys(others), key=others.count)
            found = _examples(re.sub(rf"\b{alias}\(", entry_point + "(", prompt), entry_point)
    return found


def _examples(prompt: str, entry_point: str) -> list[TestCase]:
    lines = prompt.splitlines()
    found: dict[str, TestCase] = {}
    for i, raw in enumerate(lines):
        line = raw.strip().lstrip("*").strip()
        call = expected = None
        if line.startswith(">>>"):
            call, used = _leading_call(line[3:].strip(), entry_point)
            rest = line[3:].strip()[used:].strip()
            if call and rest:
                expected = _expected_after(rest)
            elif call:
                out = []
                for nxt in lines[i + 1:]:
                    s = nxt.strip()
                    if not s or s.startswith(">>>") or s.startswith('"""'):
                        break
                    out.append(s)
                expected = _literal(" ".join(out)) if out else None
        elif m := _FOR_OUTPUT.search(line):
            args = ", ".join(_literal_prefix(v) or "?" for v in re.split(r"(?:^|,)\s*\w+\s*=\s*", m.group("args"))[1:])
            call, _ = _leading_call(f"{entry_point}({args})", entry_point)
            expected = _literal(m.group("out")) if call else None
        else:
            at = line.find(entry_point + "(")
            if at < 0 or line.startswith("def "):
                continue
            call, used = _leading_call(line[at:], entry_point)
            expected = _expected_after(line[at + used:]) if call else None
        if call and expected is not None:
            src = f"assert {call} == {expected}"
            found.setdefault(src, TestCase(src, call, expected))
    for call, expected in _input_output_examples(lines, entry_point):
        src = f"assert {call} == {expected}"
        found.setdefault(src, TestCase(src, call, expected))
    return list(found.values())


def _input_output_examples(lines: list[str], entry_point: str) -> list[tuple[str, str]]:
    """``Input: ARGS`` ... ``Output: VALUE`` blocks; ``name = value`` or ``name : value`` pairs
    become positional arguments in the order given."""
    pairs = []
    for i, raw in enumerate(lines):
        if not raw.strip().startswith("Input:"):
            continue
        args, j = [raw.strip()[len("Input:"):].strip()], i + 1
        while j < len(lines) and not lines[j].strip().startswith("Output:"):
            if not lines[j].strip() or lines[j].strip().startswith("Input:"):
                break
            args.append(lines[j].strip())
            j += 1
        if j >= len(lines) or not lines[j].strip().startswith("Output:"):
            continue
        text = ", ".join(a for a in args if a)
        text = re.sub(r"(?:^|(?<=, ))\w+\s*[:=]\s*", "", text)
        call, _ = _leading_call(f"{entry_point}({text})", entry_point)
        expected = _literal(lines[j].strip()[len("Output:"):]) if call else None
        if call and expected is not None:
            pairs.append((call, expected))
    return pairs


def _leading_call(text: str, entry_point: str) -> tuple[str | None, int]:
    """The call of ``entry_point`` that ``text`` starts with (literal arguments only), normalized,
    and how many characters of ``text`` it took."""
    if not text.startswith(entry_point + "("):
        return None, 0
    depth = 0
    for j, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth == 0 and ch == ")":
            try:
                node = ast.parse(text[: j + 1], mode="eval").body
                if not isinstance(node, ast.Call):
                    return None, 0
                ast.literal_eval(ast.Tuple(elts=list(node.args), ctx=ast.Load()))
            except (SyntaxError, ValueError, TypeError, AttributeError):
                return None, 0
            return ast.unparse(node), j + 1
    return None, 0


def _expected_after(rest: str) -> str | None:
    rest = rest.strip()
    for arrow in _ARROWS:
        if rest.startswith(arrow):
            return _literal(rest[len(arrow):].split(" = ")[-1].split("==")[-1])
    return None


def _literal(text: str) -> str | None:
    text = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", text.strip()))
    for end in range(len(text), 0, -1):
        chunk = text[:end].strip().rstrip(".,")
        try:
            value = ast.literal_eval(chunk)
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            continue
        return repr(value)
    return None


def _literal_prefix(text: str) -> str | None:
    """The longest run of comma-separated pieces at the start of ``text`` that is one literal."""
    pieces = text.split(",")
    for end in range(len(pieces), 0, -1):
        chunk = ",".join(pieces[:end]).strip()
        try:
            ast.literal_eval(chunk)
        except (SyntaxError, ValueError, TypeError, MemoryError, RecursionError):
            continue
        return chunk
    return None



def _mutations(value: Any) -> list[Any]:
    """Small same-type changes of one literal value."""
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, int):
        return [v for v in (value + 1, value - 1, 0, -value, value * 2, value + 7) if abs(v) <= 10**6]
    if isinstance(value, float):
        return [value + 0.5, -value, 0.0, round(value * 3, 3)]
    if isinstance(value, str):
        return [value[::-1], value.upper(), value.lower(), value.swapcase(), value[1:], value + value[:1], ""]
    if isinstance(value, (list, tuple)):
        kind = type(value)
        items = list(value)
        out = [kind(items[::-1]), kind(items[1:]), kind(items + items[:1]), kind()]
        try:
            out.append(kind(sorted(items)))
        except TypeError:
            pass
        for i, item in enumerate(items[:3]):
            out += [kind(items[:i] + [m] + items[i + 1:]) for m in _mutations(item)[:2]]
        return out
    return []


def augment_inputs(calls: Iterable[str], entry_point: str, *, limit: int = 40, seed: str = "") -> list[str]:
    """Up to ``limit`` new calls of ``entry_point``, each a known call with one literal argument
    slightly changed. They have no expected value: they only make candidates' behaviour comparable
    on more inputs, so two programs that agree on them are likelier to be the same function."""
    known = list(dict.fromkeys(calls))
    fresh: dict[str, None] = {}
    for call in known:
        try:
            node = ast.parse(call, mode="eval").body
            if not isinstance(node, ast.Call):
                continue
            args = [ast.literal_eval(a) for a in node.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords if k.arg}
        except (SyntaxError, ValueError, TypeError, AttributeError, MemoryError, RecursionError):
            continue
        for i, arg in enumerate(args):
            for new in _mutations(arg):
                parts = [repr(a) for a in args[:i] + [new] + args[i + 1:]]
                parts += [f"{k}={v!r}" for k, v in kwargs.items()]
                src = f"{entry_point}({', '.join(parts)})"
                if len(src) <= 300 and src not in known:
                    fresh.setdefault(src, None)
    pool = list(fresh)
    random.Random(f"{seed}:{entry_point}").shuffle(pool)
    return pool[:limit]
