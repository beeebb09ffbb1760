"""Coding agents: the ``Agent`` protocol, what an attempt is given and what it returns.

An agent works on one attempt inside one sandbox; it never touches the host filesystem, only
the ``Sandbox`` it is handed. Agents are chosen by name through ``get_agent``; each lives in its
own module, imported only when asked for, so adding one is one line in ``AGENTS``.

Modules: ``claude`` (a tool-use loop over the one LLM client), its ``tools`` (``bash`` and a
file editor, run only through the sandbox), and ``command`` (an external agent CLI or any shell
command run in the sandbox).
"""

from __future__ import annotations

import datetime as dt
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from fibreflow.clock import Deadline, utc_now
from fibreflow.errors import AgentError

if TYPE_CHECKING:
    from fibreflow.sandbox.base import Sandbox

AttemptStatus = Literal["completed", "failed", "error", "limit"]
ErrorKind = Literal["auth", "model", "transport"]
"""Why an attempt ended on an infrastructure error rather than on its work: the key or its
permissions were refused (``auth``: 401, 403), the model API failed for good (``model``: 429/529/5xx
after retries, 400, 404), or it could not be reached (``transport``: connection errors, timeouts)."""

# name -> "module:Class"; imported lazily so an agent's heavy dependencies load only when used
AGENTS: dict[str, str] = {
    "claude": "fibreflow.agents.claude:ClaudeAgent",
    "command": "fibreflow.agents.command:CommandAgent",
}



@dataclass(frozen=True)
class AttemptLimits:
    """What one attempt may spend; ``None`` means no limit of that kind."""

    timeout_s: float | None = None
    max_turns: int | None = None
    max_tokens: int | None = None
    max_cost_usd: float | None = None


@dataclass(frozen=True)
class AttemptTask:
    """Everything an agent is told about one attempt at one feature.

    ``deadline`` is the attempt's one deadline, made by the runner (``run_attempt``) from
    ``limits.timeout_s`` when the agent starts; agents pass it on to every model call. ``None``
    (a task built by hand): the agent makes it from ``limits.timeout_s`` when it starts.
    ``tier`` is the model tier the runner chose and ``tier_reason`` why (``override``, an agent
    rule, the task's words, an escalation); ``model`` is a model ID given as an override, sent
    whatever the tier.
    """

    run_id: str
    feature_id: str
    attempt_id: str
    description: str
    test_command: str | None = None
    attempt_index: int = 0
    iteration: int = 1
    tier: str | None = None
    learnings: list[str] = field(default_factory=list)
    limits: AttemptLimits = field(default_factory=AttemptLimits)
    deadline: Deadline | None = None
    tier_reason: str | None = None
    model: str | None = None

    def prompt(self) -> str:
        """The task as markdown: the feature, how it is tested, and the patterns learned so far."""
        parts = [f"# Feature {self.feature_id}", "", self.description.strip(), ""]
        if self.test_command:
            parts += ["## How it is checked", "", f"`{self.test_command}` must pass.", ""]
        if self.learnings:
            parts += ["## Learned from earlier attempts", ""] + [f"- {item}" for item in self.learnings] + [""]
        return "\n".join(parts)


@dataclass
class AttemptOutcome:
    """What an agent reports back; the transcript is kept even when a limit ends the attempt.

    ``error_kind`` is set when the attempt ended on an infrastructure error (``ErrorKind``): then
    its work was never judged, and the runner runs no tests for it."""

    status: AttemptStatus
    summary: str = ""
    transcript: list[dict[str, Any]] = field(default_factory=list)
    cost_usd: float = 0.0
    tokens: int = 0
    turns: int = 0
    error: str | None = None
    started_at: dt.datetime = field(default_factory=utc_now)
    ended_at: dt.datetime | None = None
    error_kind: ErrorKind | None = None

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end, once ended."""
        return None if self.ended_at is None else (self.ended_at - self.started_at).total_seconds()


@runtime_checkable
class Agent(Protocol):
    """Does one attempt at a feature inside a sandbox."""

    name: str

    def run(self, task: AttemptTask, sandbox: Sandbox) -> AttemptOutcome: ...


def known_agents() -> list[str]:
    """Names ``get_agent`` accepts."""
    return sorted(AGENTS)


def get_agent(name: str, **options: Any) -> Agent:
    """The agent called ``name``, built with ``options``; an unknown name lists the known ones."""
    target = AGENTS.get(name)
    if target is None:
        raise AgentError(f"unknown agent {name!r}; known agents: {', '.join(known_agents())}")
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        return cls(**options)
    except TypeError as exc:
        raise AgentError(f"agent {name!r}: bad options: {exc}") from None


__all__ = [
    "AGENTS",
    "Agent",
    "AttemptLimits",
    "AttemptOutcome",
    "AttemptStatus",
    "AttemptTask",
    "ErrorKind",
    "get_agent",
    "known_agents",
]
