"""The whole test suite on the combined winners, before anything is deployed.

Each feature's attempts ran the feature's own test command; once every winner is committed the
last branch holds all of them together, and only the repository's whole test suite shows how
they behave side by side. It runs in a fresh sandbox of the run's backend and profile (like
every other test run), over a checkout of the run's last commit. A failure stops the run and
names each failing test and the features whose code it touches: a feature touches a test when
its commit changed the test file itself, or a Python module the test file imports.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fibreflow.autopilot import gitrepo
from fibreflow.autopilot.state import Done
from fibreflow.build.features import DEFAULT_TEST_COMMAND
from fibreflow.errors import AutopilotError

if TYPE_CHECKING:
    from fibreflow.autopilot.pipeline import Context

STEP = "test_suite"
_NO_TESTS = 5  # pytest's exit code when it collected nothing
_IMPORT = re.compile(r"^\s*(?:from\s+([\w.]+)\s+import|import\s+([\w.]+))", re.MULTILINE)


def suite_command(ctx: Context) -> str:
    """``autopilot.suite_command``, else the run's test command, else ``python -m pytest -q``."""
    return ctx.settings.autopilot.suite_command or ctx.options.test_command or DEFAULT_TEST_COMMAND


def suite_step(ctx: Context) -> Done:
    """Run the whole suite on the run's commit; AutopilotError naming failing tests and features."""
    from fibreflow.sandbox.manager import SandboxManager

    commit = ctx.run.get("commit_sha")
    if not commit:
        raise AutopilotError(f"run {ctx.log.run_id} has no commit to test", step=STEP)
    o, command = ctx.options, suite_command(ctx)
    with gitrepo.checkout(ctx.repo, commit, label="suite") as tree:
        manager = SandboxManager(store=ctx.store, repo=tree, backend=o.backend or ctx.settings.sandbox.backend,
                                 run_id=f"{ctx.log.run_id}.suite")
        sandbox = manager.create_sandbox(STEP, o.profile or ctx.settings.sandbox.profile)
        try:
            found = manager.extract_results(sandbox, test_command=command)
        finally:
            manager.cleanup_sandbox(sandbox)
        test = found.test_result
        code = test.exit_code if test is not None else None
        detail: dict[str, Any] = {
            "command": command, "commit": commit, "exit_code": code,
            "killed_reason": test.killed_reason if test is not None and test.killed else None,
            "tests_passed": found.tests_passed, "tests_failed": found.tests_failed,
            "tests_errors": found.tests_errors, "tests_skipped": found.tests_skipped}
        total = found.tests_passed + found.tests_failed + found.tests_errors + found.tests_skipped
        if code == _NO_TESTS and total == 0:
            return Done({**detail, "note": "the test command collected no tests"})
        if found.tests_ok:
            return Done(detail)
        ids = {name: node_id(tree, name) for name, _ in found.failures}
        touched = _features_touching(ctx, tree, list(ids.values()))
    failing = [{"test": ids[name], "message": message[:300], "features": touched.get(ids[name], [])}
               for name, message in found.failures]
    detail.update(failing=failing, output=_tail(found.logs))
    if failing:
        listed = "; ".join(f"{f['test']} (features: {', '.join(f['features']) or 'none found'})"
                           for f in failing[:10]) + (f"; and {len(failing) - 10} more" if len(failing) > 10 else "")
        why = f"{len(failing)} failing: {listed}"
    else:
        killed = f" (killed: {detail['killed_reason']})" if detail["killed_reason"] else ""
        why = f"`{command}` exited {code}{killed}: {_last_line(found.logs)}"
    raise AutopilotError(f"the whole test suite failed on the combined winners (commit {commit[:12]}): {why}",
                         step=STEP, detail=detail)


def _features_touching(ctx: Context, tree: Path, tests: list[str]) -> dict[str, list[str]]:
    """test name -> ids of the features whose commit changed the test's file or a module it imports."""
    changed: dict[str, set[str]] = {}
    for step in ctx.log.steps():
        if step.step.startswith("commit:") and step.feature_id:
            changed[step.feature_id] = set(step.detail.get("paths") or [])
    out: dict[str, list[str]] = {}
    for name in tests:
        path = file_of(tree, name)
        if path is None:
            out[name] = []
            continue
        modules = _imported(tree / path)
        out[name] = [fid for fid, paths in changed.items()
                     if path in paths or any(_module_of(p) in modules for p in paths if p.endswith(".py"))]
    return out


def node_id(tree: Path, name: str) -> str:
    """A JUnit test name as pytest's node id where its file is found: ``tests.test_calc.TestX::test_a``
    -> ``tests/test_calc.py::TestX::test_a``; otherwise the name unchanged."""
    head, _, rest = name.partition("::")
    if head.endswith(".py"):
        return name
    parts = head.split(".")
    for end in range(len(parts), 0, -1):  # the classname may end in a test class: drop parts until a file
        candidate = "/".join(parts[:end]) + ".py"
        if (tree / candidate).is_file():
            return "::".join(p for p in (candidate, *parts[end:], rest) if p)
    return name


def file_of(tree: Path, node: str) -> str | None:
    """The file of a pytest node id, if the tree has it."""
    head = node.split("::", 1)[0]
    return head if head.endswith(".py") and (tree / head).is_file() else None


def _imported(path: Path) -> set[str]:
    """Every module a file imports, with each of its parent packages (``a.b.c`` -> a, a.b, a.b.c)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return set()
    found: set[str] = set()
    for a, b in _IMPORT.findall(text):
        parts = (a or b).split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found


def _module_of(path: str) -> str:
    """``src/pkg/mod.py`` -> ``pkg.mod`` (``src/`` layouts too); ``pkg/__init__.py`` -> ``pkg``."""
    parts = path[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    if parts and parts[0] == "src":
        parts = parts[1:]
    return ".".join(parts)


def _tail(text: str, limit: int = 4000) -> str:
    from fibreflow.sla.delivery import scrub

    return scrub(text[-limit:])


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


__all__ = ["STEP", "file_of", "node_id", "suite_command", "suite_step"]
