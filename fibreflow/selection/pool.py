"""A behaviour runner for real attempts: every attempt's sandbox runs one shared pool of tests.

The pool is the feature's own test files plus the test files each attempt wrote (its
``artifacts["tests"]``, path -> text). Each sandbox runs pytest over the whole pool and the
verdict of every test, read from JUnit XML, is that attempt's outcome on it. Two attempts that
pass and fail the same tests behave alike; an attempt failing tests its peers wrote is caught.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from xml.etree import ElementTree

from fibreflow.build.attempt import AgentAttempt
from fibreflow.errors import SandboxError
from fibreflow.sandbox.base import Sandbox
from fibreflow.selection.behaviour import Behaviour

POOL_DIR = ".fibreflow/pool"
MISSING = "!missing"


class SandboxTestPool:
    """Runs the shared test pool in each attempt's sandbox; callable as a ``BehaviourRunner``."""

    def __init__(self, sandboxes: Mapping[str, Sandbox], *, feature_tests: Mapping[str, str] | None = None,
                 python: str = "python3", timeout: float = 300.0) -> None:
        self.sandboxes = dict(sandboxes)
        self.feature_tests = dict(feature_tests or {})
        self.python = python
        self.timeout = timeout

    def pool(self, attempts: Sequence[AgentAttempt]) -> dict[str, str]:
        """The pool's files by their name in ``POOL_DIR``: feature tests first, then each attempt's."""
        files: dict[str, str] = {}
        sources = [("feature", self.feature_tests)] + [
            (a.attempt_id, a.artifacts.get("tests") or {}) for a in attempts]
        for owner, tests in sources:
            for path, text in tests.items():
                stem = re.sub(r"\W", "_", PurePosixPath(path).stem.removeprefix("test_"))
                tag = re.sub(r"\W", "_", owner)
                files[f"test_{tag}_{len(files)}_{stem}.py"] = text
        return files

    def __call__(self, attempts: Sequence[AgentAttempt]) -> Behaviour:
        files = self.pool(attempts)
        verdicts: dict[str, dict[str, str]] = {}
        for attempt in attempts:
            sandbox = self.sandboxes.get(attempt.attempt_id)
            if sandbox is None or not files:
                continue
            sandbox.write_files({f"{POOL_DIR}/{name}": text for name, text in files.items()})
            junit = f"{POOL_DIR}/junit.xml"
            cmd = (f"{shlex.quote(self.python)} -m pytest -q -p no:cacheprovider --rootdir {POOL_DIR} "
                   f"{POOL_DIR} --junitxml={junit}")
            result = sandbox.run(cmd, timeout=self.timeout)
            try:
                verdicts[attempt.attempt_id] = junit_verdicts(sandbox.read_file(junit))
            except (FileNotFoundError, SandboxError, OSError):
                reason = result.killed_reason or f"exit {result.exit_code}"
                verdicts[attempt.attempt_id] = {"*": f"!{reason}"}
        names = sorted({n for v in verdicts.values() for n in v if n != "*"})
        outcomes = {aid: [v.get(n, v.get("*", MISSING)) for n in names] for aid, v in verdicts.items()}
        passed = {aid: [o == "pass" for o in outs] for aid, outs in outcomes.items()}
        return Behaviour(outcomes=outcomes, pool_tests=passed)


def junit_verdicts(xml: str) -> dict[str, str]:
    """Test id -> ``pass``, ``skip`` or ``!Type`` (the failure's or error's type) from JUnit XML."""
    root = ElementTree.fromstring(xml)
    out: dict[str, str] = {}
    for case in root.iter("testcase"):
        name = "::".join(x for x in (case.get("classname"), case.get("name")) if x)
        verdict = "pass"
        for tag in ("failure", "error"):
            node = case.find(tag)
            if node is not None:
                verdict = "!" + (node.get("type") or tag).rsplit(".", 1)[-1]
                break
        else:
            if case.find("skipped") is not None:
                verdict = "skip"
        out[name] = verdict
    return out
