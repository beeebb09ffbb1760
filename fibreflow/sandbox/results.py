"""Test results out of a sandbox: the pytest command that writes them, and their parsers.

pytest writes a JUnit XML report and, when ``coverage`` is importable in the sandbox's
interpreter, runs under ``coverage run`` and writes ``coverage json``: both land in the
workspace's ``.fibreflow/`` directory, which is never part of an attempt's diff.
"""

from __future__ import annotations

import json
import shlex
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

_PYTHONS = ("python", "python3")
_MAX_REPORT_BYTES = 50 << 20


@dataclass
class TestCounts:
    """What a JUnit XML report says."""

    __test__ = False  # not a pytest test class

    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.errors + self.skipped


def pytest_args(test_command: str) -> list[str] | None:
    """The arguments after ``pytest`` if ``test_command`` is a plain pytest call, else None."""
    try:
        tokens = shlex.split(test_command)
    except ValueError:
        return None
    if tokens and tokens[0] in ("pytest", "py.test"):
        return tokens[1:]
    if len(tokens) >= 3 and tokens[0] in _PYTHONS and tokens[1:3] == ["-m", "pytest"]:
        return tokens[3:]
    return None


def instrumented_command(test_command: str, *, junit_path: str, coverage_path: str) -> str:
    """The shell command that runs ``test_command`` and leaves the JUnit XML and coverage JSON.

    A command that is not a plain pytest call runs unchanged (it may write the report itself).
    """
    args = pytest_args(test_command)
    if args is None:
        return test_command
    q = shlex.quote
    rest = " ".join(q(a) for a in args)
    dirs = {d for d in (junit_path.rpartition("/")[0], coverage_path.rpartition("/")[0]) if d}
    data_file = (coverage_path.rpartition("/")[0] or ".") + "/.coverage"
    mkdir = f"mkdir -p {' '.join(q(d) for d in sorted(dirs))} && " if dirs else ""
    junit = f"--junitxml={q(junit_path)} -o junit_family=xunit2"
    return (
        f"rm -f {q(junit_path)} {q(coverage_path)}; {mkdir}"
        "if python -c 'import coverage' 2>/dev/null; then "
        f"COVERAGE_FILE={q(data_file)} python -m coverage run -m pytest {rest} {junit}; rc=$?; "
        f"COVERAGE_FILE={q(data_file)} python -m coverage json -q -o {q(coverage_path)} >/dev/null 2>&1; "
        "exit $rc; "
        f"else python -m pytest {rest} {junit}; fi"
    )


def parse_junit(text: str) -> TestCounts:
    """Count the test cases of a JUnit XML report (pytest's or any xunit2 producer's)."""
    if len(text) > _MAX_REPORT_BYTES:
        raise ValueError("JUnit report too large")
    root = ET.fromstring(text)
    counts = TestCounts()
    for case in root.iter("testcase"):
        name = "::".join(p for p in (case.get("classname"), case.get("name")) if p)
        failure = case.find("failure")
        error = case.find("error")
        if failure is not None:
            counts.failed += 1
            counts.failures.append((name, _message(failure)))
        elif error is not None:
            counts.errors += 1
            counts.failures.append((name, _message(error)))
        elif case.find("skipped") is not None:
            counts.skipped += 1
        else:
            counts.passed += 1
    return counts


def _message(node: ET.Element) -> str:
    message = node.get("message") or (node.text or "").strip().splitlines()[-1:] or [""]
    text = message if isinstance(message, str) else message[0]
    return text[:2000]


def parse_coverage(text: str) -> float | None:
    """The covered share (0..1) from a ``coverage json`` report."""
    try:
        data = json.loads(text)
        percent = data["totals"]["percent_covered"]
    except (ValueError, KeyError, TypeError):
        return None
    return max(0.0, min(1.0, float(percent) / 100.0))
