"""The ``claude`` agent: a tool-use loop over the one LLM client, working only through a Sandbox.

Each turn sends the conversation (system prompt and tools cached) to the routed tier's model;
``tool_use`` blocks run through :class:`fibreflow.agents.tools.SandboxTools` and go back as
``tool_result`` blocks, mistakes as ``is_error: true`` results the model can correct. The loop
ends when the model replies without a tool call (``completed``), when a turn, token, dollar or
time limit is reached or replies keep being cut at ``max_tokens`` (``limit``, with the limit
named), when the model stops answering usefully (``failed``: empty replies, a refusal), or when
a model call fails for good (``error``: retries exhausted, timeout). Every ending keeps the
transcript. Tokens count every kind: fresh input, cache writes, cache reads and output.

The attempt's time limit is one ``Deadline`` (the task's, from the runner, tightened by the
agent's own ``timeout_s``): it bounds every tool command and goes into every model call, whose
tries and retry sleeps the client cuts to the time left; when it runs out, during a call or
between turns, the attempt ends as ``limit`` with a reason that starts "deadline exceeded".
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fibreflow.agents import AttemptOutcome, AttemptStatus, AttemptTask, ErrorKind
from fibreflow.agents.tools import NATIVE_TOOL_SPECS, TOOL_SPECS, SandboxTools
from fibreflow.clock import Deadline
from fibreflow.config import TIERS
from fibreflow.errors import AgentError, FibreflowError, LLMError, SandboxError
from fibreflow.models.client import DEADLINE_EXCEEDED

if TYPE_CHECKING:
    from fibreflow.models.client import LLMClient
    from fibreflow.sandbox.base import Sandbox
    from fibreflow.store import Store

EMPTY_NUDGE = "(Your last reply was empty. Continue the task, or reply with a short summary if it is done.)"
CUT_NOTE = ("(Your last reply was cut off at the max_tokens limit. Continue from where it stopped, in smaller "
            "steps: shorter text, one tool call at a time, large files written in parts.)")
_CUT_TOOL = "Not run: your reply was cut off at max_tokens before this tool call was complete. Send it again."
_CACHE = {"type": "ephemeral"}

SYSTEM_INSTRUCTIONS = """\
You are a coding agent working on one feature of a software project. The repository is your working \
directory (/workspace) in an isolated sandbox without network access.

Tools:
- bash: runs one command in a fresh shell in the workspace (limit {timeout:g}s per command); long output is \
clipped in the middle.
- str_replace_based_edit_tool: view, create, str_replace and insert files; paths are relative to the workspace.

Work in small steps: read the relevant code, make the change, run the tests, fix what fails. Do not change \
tests to make them pass. When the tests pass, reply with a short summary of the change and no tool call.
This attempt may use at most {turns} model turns and ${cost:.2f}."""


class _Ended(Exception):
    """Ends the loop, carrying how the attempt ended."""

    def __init__(self, status: AttemptStatus, reason: str | None = None, summary: str = "") -> None:
        super().__init__(reason or status)
        self.status, self.reason, self.summary = status, reason, summary


@dataclass(frozen=True)
class _Budget:
    max_turns: int
    max_tokens: int
    max_cost_usd: float
    deadline: Deadline

    def remaining_s(self) -> float | None:
        return self.deadline.remaining_s()


def _tighter(a: float | None, b: float | None) -> Any:
    return b if a is None else a if b is None else min(a, b)


class ClaudeAgent:
    """Works on a feature with the Messages API's tool use; see the module docstring.

    ``tier`` overrides the router (and the runner's escalation tier); ``offline=True`` uses the
    scripted model, with ``script`` (a shipped name such as ``"demo_feature"`` or a file) as its
    conversation. Limits are per attempt (``timeout_s``: seconds, ``None`` for none); the task's
    ``AttemptLimits`` and deadline can only tighten them.
    """

    name = "claude"

    def __init__(self, *, client: LLMClient | None = None, offline: bool = False, tier: str | None = None,
                 script: str | Path | None = None, max_turns: int = 30, max_tokens_per_attempt: int = 2_000_000,
                 max_cost_usd: float = 3.0, max_tokens_per_reply: int = 8192, max_cut_replies: int = 2,
                 command_timeout_s: float = 300.0, max_output_chars: int = 12_000, native_tools: bool = False,
                 timeout_s: float | None = None, store: Store | None = None) -> None:
        if tier is not None and tier not in TIERS:
            raise AgentError(f"unknown tier {tier!r} for the claude agent (known: {', '.join(TIERS)})")
        for label, value in (("max_turns", max_turns), ("max_tokens_per_attempt", max_tokens_per_attempt),
                             ("max_tokens_per_reply", max_tokens_per_reply), ("max_cost_usd", max_cost_usd)):
            if value <= 0:
                raise AgentError(f"claude agent: {label} must be positive, got {value}")
        if timeout_s is not None and not timeout_s > 0:
            raise AgentError(f"claude agent: timeout_s must be positive, got {timeout_s}")
        if script is not None and client is None and not offline:
            raise AgentError("claude agent: script= is the scripted model's conversation; it needs offline=True")
        if client is None:
            from fibreflow.models.client import LLMClient
            from fibreflow.models.scripts import script_path

            client = LLMClient(store=store, offline=offline,
                               script=script_path(script) if script is not None else None)
            self._owns_client = True
        else:
            self._owns_client = False
        self.client = client
        self.tier = tier
        self.max_turns, self.max_cost_usd, self.timeout_s = max_turns, max_cost_usd, timeout_s
        self.max_tokens_per_attempt = max_tokens_per_attempt
        self.max_tokens_per_reply, self.max_cut_replies = max_tokens_per_reply, max_cut_replies
        self.command_timeout_s, self.max_output_chars = command_timeout_s, max_output_chars
        self.tool_specs = NATIVE_TOOL_SPECS if native_tools else TOOL_SPECS

    def describe(self) -> str:
        """One line naming the model behind the agent (``scripted`` when offline)."""
        return self.client.describe()

    def close(self) -> None:
        """Close the client this agent created (and its scripted server)."""
        if self._owns_client:
            self.client.close()

    def __enter__(self) -> ClaudeAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- prompts -------------------------------------------------------------------------------

    def system_prompt(self, task: AttemptTask, *, max_turns: int | None = None,
                      max_cost_usd: float | None = None) -> str:
        """Instructions, the feature, how it is tested, and the known pitfalls learned so far."""
        parts = [SYSTEM_INSTRUCTIONS.format(timeout=self.command_timeout_s, turns=max_turns or self.max_turns,
                                            cost=max_cost_usd or self.max_cost_usd),
                 f"## Feature {task.feature_id}\n\n{task.description.strip()}"]
        if task.test_command:
            parts.append(f"## Tests\n\n`{task.test_command}` must pass in the workspace.")
        else:
            parts.append("## Tests\n\nNo test command is given: check the change yourself before you finish.")
        if task.learnings:
            parts.append("## Known pitfalls\n\nEarlier attempts ran into these; avoid them:\n"
                         + "\n".join(f"- {item}" for item in task.learnings))
        return "\n\n".join(parts) + "\n"

    @staticmethod
    def first_message(task: AttemptTask) -> str:
        """The opening user message."""
        check = f" Make sure `{task.test_command}` passes." if task.test_command else ""
        return f"Implement feature `{task.feature_id}`: {task.description.strip()}{check}"

    # -- the attempt ---------------------------------------------------------------------------

    def run(self, task: AttemptTask, sandbox: Sandbox) -> AttemptOutcome:
        """One attempt at ``task`` in ``sandbox``; never raises for what happens inside the attempt."""
        outcome = AttemptOutcome(status="error")
        limits = task.limits
        deadline = (task.deadline or Deadline.after(limits.timeout_s)).earliest(Deadline.after(self.timeout_s))
        budget = _Budget(_tighter(self.max_turns, limits.max_turns),
                         _tighter(self.max_tokens_per_attempt, limits.max_tokens),
                         _tighter(self.max_cost_usd, limits.max_cost_usd), deadline)
        system = self.system_prompt(task, max_turns=budget.max_turns, max_cost_usd=budget.max_cost_usd)
        first = self.first_message(task)
        outcome.transcript += [{"role": "system", "content": system}, {"role": "user", "content": first}]
        tools = SandboxTools(sandbox, command_timeout_s=self.command_timeout_s,
                             max_output_chars=self.max_output_chars)
        try:
            self._loop(task, system, [{"role": "user", "content": first}], tools, budget, outcome)
        except _Ended as end:
            outcome.status, outcome.error = end.status, end.reason
            outcome.summary = end.summary or outcome.summary
        except LLMError as exc:
            if exc.error_type == DEADLINE_EXCEEDED:  # the call stopped at the attempt's deadline
                outcome.status, outcome.error = "limit", f"{_deadline_reason(deadline)}: {exc}"
            else:
                outcome.status, outcome.error = "error", f"model call failed: {exc}"
                outcome.error_kind = error_kind(exc)
        except SandboxError as exc:
            outcome.status, outcome.error = "error", f"sandbox failed: {exc}"
        except FibreflowError as exc:
            outcome.status, outcome.error = "error", str(exc)
        finally:
            outcome.ended_at = dt.datetime.now(dt.UTC)
        if outcome.error:
            outcome.transcript.append({"role": "end", "status": outcome.status, "reason": outcome.error})
        return outcome

    def _loop(self, task: AttemptTask, system: str, messages: list[dict[str, Any]], tools: SandboxTools,
              budget: _Budget, outcome: AttemptOutcome) -> None:
        tier = self.tier or task.tier
        empty = cut = 0
        while True:
            if outcome.turns >= budget.max_turns:
                raise _Ended("limit", f"turn limit reached: {outcome.turns} of {budget.max_turns} model turns")
            self._check_time(budget)
            # routed on the feature, not on each tool result, so one attempt stays on one tier
            message = self.client.create_message(
                messages=_with_breakpoint(messages), system=[{"type": "text", "text": system, "cache_control": _CACHE}],
                tools=self.tool_specs, max_tokens=self.max_tokens_per_reply, tier=tier,
                task_text=task.description, agent=self.name, run_id=task.run_id, attempt_id=task.attempt_id,
                deadline=budget.deadline, model_id=task.model)
            call = self.client.last_call
            content = [block.model_dump(mode="json", exclude_none=True) for block in message.content]
            outcome.turns += 1
            outcome.cost_usd += call.cost_usd if call else 0.0
            outcome.tokens += sum(call.usage.values()) if call else 0
            outcome.transcript.append({"role": "assistant", "turn": outcome.turns, "content": content,
                                       "stop_reason": message.stop_reason, "model": message.model,
                                       "tier": call.tier if call else tier, "usage": call.usage if call else {},
                                       "cost_usd": call.cost_usd if call else 0.0})
            uses = [b for b in content if b.get("type") == "tool_use"]
            text = "\n".join(b.get("text", "") for b in content if b.get("type") == "text").strip()
            if text:
                outcome.summary = text[:2000]
            if message.stop_reason == "refusal":
                raise _Ended("failed", "the model refused the task", text)
            if not text and not uses:
                empty += 1
                if empty >= 2:
                    raise _Ended("failed", f"the model sent {empty} empty replies in a row "
                                           f"(stop_reason {message.stop_reason})")
                self._check_spend(budget, outcome)
                _append_user_text(messages, EMPTY_NUDGE)
                outcome.transcript.append({"role": "user", "content": EMPTY_NUDGE})
                continue
            empty = 0
            messages.append({"role": "assistant", "content": content})
            if message.stop_reason == "max_tokens":
                cut += 1
                if cut > self.max_cut_replies:
                    raise _Ended("limit", f"reply cut at max_tokens ({self.max_tokens_per_reply}) "
                                          f"{cut} times in a row")
                self._check_spend(budget, outcome)
                blocks = [_result(u["id"], _CUT_TOOL, True) for u in uses] + [{"type": "text", "text": CUT_NOTE}]
                messages.append({"role": "user", "content": blocks})
                outcome.transcript.append({"role": "user", "content": blocks})
                continue
            cut = 0
            if not uses:
                if message.stop_reason == "pause_turn":
                    continue  # the API paused a long turn: sending it back resumes it
                raise _Ended("completed", None, text)
            self._check_spend(budget, outcome)
            results = []
            for use in uses:
                self._check_time(budget)
                done = tools.execute(use.get("name", ""), use.get("input"), timeout=budget.remaining_s())
                results.append(_result(use["id"], done.text, done.is_error))
            messages.append({"role": "user", "content": results})
            outcome.transcript.append({"role": "user", "content": results})

    @staticmethod
    def _check_spend(budget: _Budget, outcome: AttemptOutcome) -> None:
        if outcome.cost_usd >= budget.max_cost_usd:
            raise _Ended("limit", f"spend limit reached: ${outcome.cost_usd:.4f} of ${budget.max_cost_usd:.4f} "
                                  f"after {outcome.turns} turns")
        if outcome.tokens >= budget.max_tokens:
            raise _Ended("limit", f"token limit reached: {outcome.tokens} of {budget.max_tokens} tokens "
                                  f"after {outcome.turns} turns")

    @staticmethod
    def _check_time(budget: _Budget) -> None:
        if budget.deadline.expired:
            raise _Ended("limit", _deadline_reason(budget.deadline))


def error_kind(exc: LLMError) -> ErrorKind:
    """The ``ErrorKind`` of a model call that failed for good: ``auth`` for a refused key (401) or
    permission (403), ``transport`` when no HTTP answer came (connection error, timeout), else
    ``model``."""
    if exc.status_code in (401, 403):
        return "auth"
    if exc.status_code is None and exc.error_type in ("connection_error", "timeout"):
        return "transport"
    return "model"


def _deadline_reason(deadline: Deadline) -> str:
    return f"deadline exceeded: the attempt's {deadline.describe()} was reached"


def _result(tool_use_id: str, text: str, is_error: bool) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id, "content": text}
    if is_error:
        block["is_error"] = True
    return block


def _append_user_text(messages: list[dict[str, Any]], text: str) -> None:
    last = messages[-1]
    content = last["content"]
    blocks = [{"type": "text", "text": content}] if isinstance(content, str) else list(content)
    messages[-1] = {**last, "content": [*blocks, {"type": "text", "text": text}]}


def _with_breakpoint(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages with a cache breakpoint on the last block, so each turn reads the previous prefix."""
    out = list(messages)
    last = out[-1]
    content = last["content"]
    blocks: list[dict[str, Any]] = ([{"type": "text", "text": content}] if isinstance(content, str)
                                    else [dict(b) for b in content])
    blocks[-1] = {**blocks[-1], "cache_control": _CACHE}
    out[-1] = {**last, "content": blocks}
    return out


__all__ = ["CUT_NOTE", "EMPTY_NUDGE", "ClaudeAgent", "error_kind"]
