"""``SandboxManager``: create -> execute -> extract results -> clean up, each session recorded.

One manager serves one run (or one ``fibreflow sandbox run``) and is safe to share between
worker threads. Every sandbox it creates ends as one ``sandbox_sessions`` row, handed at
cleanup to a ``SessionWriter`` (``fibreflow.sandbox.records``): written at once for a store, or
queued on a build's batch writer. The manager knows agents only as something with
``run(task, sandbox)``: agents sit in a later layer.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from fibreflow.clock import utc_now
from fibreflow.errors import SandboxError
from fibreflow.sandbox.backends import get_backend
from fibreflow.sandbox.base import CommandResult, Sandbox, SandboxBackend, SandboxProfile, store_files
from fibreflow.sandbox.profiles import load_profile
from fibreflow.sandbox.records import SessionRow, SessionWriter, store_sessions
from fibreflow.sandbox.results import instrumented_command, parse_coverage, parse_junit
from fibreflow.store import Store

log = logging.getLogger(__name__)
_Task = TypeVar("_Task", contravariant=True)
_Outcome = TypeVar("_Outcome", covariant=True)
_T = TypeVar("_T")
_R = TypeVar("_R")


class SandboxWorker(Protocol[_Task, _Outcome]):
    """What works inside a sandbox: an ``Agent`` (``run(AttemptTask, Sandbox) -> AttemptOutcome``)."""

    def run(self, task: _Task, sandbox: Sandbox) -> _Outcome: ...


@dataclass
class SandboxResults:
    """What an attempt left in its sandbox: tests, coverage, diff, logs and timings."""

    tests_passed: int = 0
    tests_failed: int = 0
    tests_errors: int = 0
    tests_skipped: int = 0
    coverage: float | None = None
    diff: str = ""
    logs: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    test_result: CommandResult | None = None
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def tests_ok(self) -> bool:
        """The test command ran, exited 0 and no test failed or errored."""
        return (self.test_result is not None and self.test_result.ok
                and self.tests_failed == 0 and self.tests_errors == 0)


@dataclass
class _Session:
    feature_id: str
    attempt_id: str | None
    profile: str
    started_at: dt.datetime


class SandboxManager:
    """Creates sandboxes over one repository on one backend and records their sessions."""

    def __init__(self, *, repo: str | Path, store: Store | None = None,
                 record_session: SessionWriter | None = None, backend: str | SandboxBackend = "local",
                 run_id: str | None = None, state_dir: str | Path | None = None,
                 hidden_paths: Iterable[str | Path] = ()) -> None:
        """Sessions go to ``record_session`` or, without one, straight to ``store``.

        A local backend made here hides from its sandboxes, beyond the configured store and the
        state directory (which it always hides), ``store``'s files and ``hidden_paths`` (give
        ``fibreflow.sandbox.base.store_files(path)`` for a store passed as ``record_session``).
        """
        if record_session is None:
            if store is None:
                raise SandboxError("SandboxManager needs a store or a record_session writer")
            record_session = store_sessions(store)
        self.record_session = record_session
        self.repo = Path(repo).expanduser().resolve()
        self.run_id = run_id
        if isinstance(backend, str):
            options: dict[str, object] = {}
            if backend == "local":
                options["hidden_paths"] = [*hidden_paths, *(store_files(store.path) if store is not None else [])]
                if state_dir is not None:
                    options["state_dir"] = state_dir
            backend = get_backend(backend, **options)
        self.backend: SandboxBackend = backend
        self._sessions: dict[str, _Session] = {}
        self._live: dict[str, Sandbox] = {}
        self._cancelled: str | None = None
        self._cancelled_ids: set[str] = set()
        self._lock = threading.Lock()

    def create_sandbox(self, feature_id: str, profile: str | SandboxProfile = "python-tests", *,
                       attempt_id: str | None = None, repo: Path | None = None) -> Sandbox:
        """A fresh sandbox for one attempt at ``feature_id``, over ``repo`` (default: the manager's;
        a build gives the stacked tree of a feature's dependencies, ``build.stacking``)."""
        prof = load_profile(profile)
        if self._cancelled is not None:
            raise SandboxError(f"no new sandbox: the run was {self._cancelled}")
        labels = {"feature": feature_id}
        if self.run_id:
            labels["fibreflow_run"] = self.run_id
        if attempt_id:
            labels["attempt"] = attempt_id
        started = utc_now()
        sandbox = self.backend.create(repo or self.repo, prof, labels=labels)
        with self._lock:
            self._sessions[sandbox.id] = _Session(feature_id, attempt_id, prof.name,
                                                  getattr(sandbox, "started_at", started))
            self._live[sandbox.id] = sandbox
            cancelled = self._cancelled
            if cancelled is not None:
                self._cancelled_ids.add(sandbox.id)
        if cancelled is not None:  # cancelled while the sandbox was being made
            self.cleanup_sandbox(sandbox, outcome="cancelled")
            raise SandboxError(f"sandbox {sandbox.id} closed at once: the run was {cancelled}")
        return sandbox

    def cancel(self, reason: str = "cancelled") -> int:
        """Refuse new sandboxes and close every open one, which kills what runs in it; returns how
        many were open.

        Each close runs on a thread of its own (a close may wait for a command to notice its kill),
        so this returns at once; call it again to close anew what is still open (a close that
        raced with a command's start kills that command the second time). Their sessions record
        ``killed_reason`` ``cancelled``.
        """
        with self._lock:
            self._cancelled = reason
            live = list(self._live.values())
            self._cancelled_ids.update(self._live)
        for sandbox in live:
            threading.Thread(target=_close_quietly, args=(sandbox,), name=f"fibreflow-cancel-{sandbox.id}",
                             daemon=True).start()
        return len(live)

    @contextmanager
    def session(self, feature_id: str, profile: str | SandboxProfile = "python-tests", *,
                attempt_id: str | None = None) -> Iterator[Sandbox]:
        """``create_sandbox`` + ``cleanup_sandbox`` around a block (outcome ``error`` if it raises)."""
        sandbox = self.create_sandbox(feature_id, profile, attempt_id=attempt_id)
        outcome = "closed"
        try:
            yield sandbox
        except BaseException:
            outcome = "error"
            raise
        finally:
            self.cleanup_sandbox(sandbox, outcome=outcome)

    def execute_feature(self, sandbox: Sandbox, task: _T, agent: SandboxWorker[_T, _R]) -> _R:
        """Let ``agent`` work on ``task`` inside ``sandbox``; returns what ``agent.run`` returns."""
        return agent.run(task, sandbox)

    def extract_results(self, sandbox: Sandbox, *, test_command: str | None = None,
                        junit_path: str = ".fibreflow/junit.xml",
                        coverage_path: str = ".fibreflow/coverage.json") -> SandboxResults:
        """Run the tests (if ``test_command``), then collect their report, coverage and the diff."""
        results = SandboxResults()
        started = time.monotonic()
        if test_command:
            command = instrumented_command(test_command, junit_path=junit_path, coverage_path=coverage_path)
            test = sandbox.run(command)
            results.test_result = test
            results.timings["tests_s"] = test.duration_s
            results.logs = test.stdout + (("\n" + test.stderr) if test.stderr else "")
        t0 = time.monotonic()
        junit = _read_optional(sandbox, junit_path)
        if junit is not None:
            try:
                counts = parse_junit(junit)
            except (ValueError, SyntaxError) as exc:  # ET.ParseError is a SyntaxError
                results.logs += f"\n[fibreflow: unreadable JUnit report {junit_path}: {exc}]"
            else:
                results.tests_passed, results.tests_failed = counts.passed, counts.failed
                results.tests_errors, results.tests_skipped = counts.errors, counts.skipped
                results.failures = counts.failures
        report = _read_optional(sandbox, coverage_path)
        if report is not None:
            results.coverage = parse_coverage(report)
        results.timings["reports_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        results.diff = sandbox.diff()
        results.timings["diff_s"] = time.monotonic() - t0
        results.timings["total_s"] = time.monotonic() - started
        return results

    def cleanup_sandbox(self, sandbox: Sandbox, *, outcome: str = "closed") -> None:
        """Close the sandbox and record its session (once; a second call does nothing)."""
        with self._lock:
            session = self._sessions.pop(sandbox.id, None)
            self._live.pop(sandbox.id, None)
        error: BaseException | None = None
        try:
            sandbox.close()
        except Exception as exc:  # recorded first, raised after: a failed cleanup must leave a trace
            error = exc
        if session is not None:
            self.record_session(self._row(sandbox, session, outcome, error))
        if error is not None:
            raise SandboxError(f"cleanup of sandbox {sandbox.id} failed: {error}") from error

    def _row(self, sandbox: Sandbox, session: _Session, outcome: str,
             error: BaseException | None) -> SessionRow:
        cost = getattr(sandbox, "estimated_cost_usd", None)
        try:
            est_cost = float(cost()) if callable(cost) else 0.0
        except Exception:
            est_cost = None
        cpu = getattr(sandbox, "cpu_seconds", None)
        return {
            "session_id": sandbox.id,
            "backend": sandbox.backend,
            "profile": session.profile,
            "isolation": getattr(sandbox, "isolation", sandbox.backend),
            "run_id": self.run_id,
            "feature_id": session.feature_id,
            "attempt_id": session.attempt_id,
            "started_at": session.started_at,
            "ended_at": getattr(sandbox, "ended_at", None) or utc_now(),
            "cpu_s": round(float(cpu), 6) if isinstance(cpu, int | float) else None,
            "est_cost_usd": est_cost,
            "outcome": "cleanup_failed" if error is not None else outcome,
            "killed_reason": ("cancelled" if sandbox.id in self._cancelled_ids
                              else getattr(sandbox, "killed_reason", None)),
        }


def _close_quietly(sandbox: Sandbox) -> None:
    try:
        sandbox.close()
    except Exception as exc:  # the attempt's own cleanup tries again and records the failure
        log.warning("could not close sandbox %s: %s", sandbox.id, exc)


def _read_optional(sandbox: Sandbox, path: str) -> str | None:
    try:
        return sandbox.read_file(path)
    except (FileNotFoundError, SandboxError):
        return None


__all__ = ["SandboxManager", "SandboxResults"]
