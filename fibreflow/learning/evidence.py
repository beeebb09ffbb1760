"""The evidence of a run, gathered from whatever describes it: an attempt, a command result, an
agent's outcome or a plain mapping. Only what was executed counts; a model's own account of why
it failed (its reflection) is never evidence."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_JUNIT_KEYS = ("junit_xml", "junit.xml", "junit")


@dataclass(frozen=True)
class Evidence:
    """Output, exit status and kill reason of the failing step; ``stage`` is test, lint, typecheck,
    smoke or deploy where the caller knows it."""

    text: str = ""
    exit_code: int | None = None
    killed_reason: str | None = None
    timed_out: bool = False
    junit_xml: str | None = None
    stage: str | None = None
    command: str | None = None

    @property
    def executed(self) -> bool:
        """Whether a real run stands behind this: an exit status, a kill, test output or a report."""
        return (self.exit_code is not None or bool(self.killed_reason) or self.timed_out
                or bool(self.junit_xml) or bool(self.text.strip()))


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def evidence_of(obj: Any) -> Evidence:
    """Evidence from an AgentAttempt, CommandResult, AttemptOutcome or a mapping with keys such as
    ``test_output``/``stdout``/``stderr``, ``exit_code``, ``killed_reason``, ``junit_xml``, ``stage``."""
    transcript = _get(obj, "transcript") or []
    commands = [t for t in transcript if isinstance(t, Mapping) and "exit_code" in t]
    if commands and _get(obj, "exit_code") is None and not _get(obj, "test_output"):
        return evidence_of(commands[-1])  # an agent outcome: its last command is the failing run
    parts = [_get(obj, k) or "" for k in ("test_output", "text", "stdout", "stderr")]
    text = "\n".join(p for p in parts if isinstance(p, str) and p)
    artifacts = _get(obj, "artifacts") or {}
    junit = _get(obj, "junit_xml")
    if not junit and isinstance(artifacts, Mapping):
        junit = next((artifacts[k] for k in _JUNIT_KEYS if isinstance(artifacts.get(k), str)), None)
        junit = next((v for k, v in artifacts.items() if str(k).endswith(".xml") and isinstance(v, str)
                      and "<testsuite" in v), junit)
    killed_reason = _get(obj, "killed_reason")
    if _get(obj, "killed") and not killed_reason:
        killed_reason = "killed"
    exit_code = _get(obj, "exit_code")
    return Evidence(text=text, exit_code=int(exit_code) if exit_code is not None else None,
                    killed_reason=killed_reason, timed_out=bool(_get(obj, "timed_out", False)),
                    junit_xml=junit or None, stage=_get(obj, "stage"), command=_get(obj, "command"))
