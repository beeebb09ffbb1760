"""Claude Code session transcripts (``~/.claude/projects``) read as priced calls, each message once.

Claude Code writes one JSON object per line to ``<project>/<session>.jsonl`` and, for subagents,
``<project>/<session>/subagents/*.jsonl``. Only ``type: "assistant"`` lines carry spend
(``message.usage``, ``message.model``). One response is written several times: streaming
re-emits a line per content block, a subagent file repeats lines of the main session, and some
copies lack ``requestId``. A response is therefore counted once, keyed by ``message.id`` and
``requestId`` as ccusage keys it (``messageId:requestId``), falling back to the message id alone
when the request id is missing (ccusage#985); a copy without a request id joins the keyed copy
of the same message. Of the copies, the one with the most tokens is kept: streaming's early
copies carry partial ``output_tokens`` (ccusage keeps the first and undercounts, ccusage#797).
Lines of the ``<synthetic>`` model (Claude Code's own placeholder replies) are skipped.

Message content is never kept beyond routing: the text of the user prompt that started a turn is
held in memory only to classify the turn's calls, never stored or printed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fibreflow.costs.analysis import _bounded_lines, _Call, _parse_time, _priced_model, _short
from fibreflow.errors import ConfigError
from fibreflow.models.pricing import USAGE_FIELDS, Pricing, usage_tokens

DEFAULT_DIR = Path("~/.claude/projects")
"""Where Claude Code keeps its session transcripts."""
SYNTHETIC_MODEL = "<synthetic>"
_PROMPT_CHARS = 4000  # enough words to route on; the rest of a long prompt adds nothing


@dataclass
class TranscriptScan:
    """What reading the transcripts found besides the calls."""

    files: int = 0
    responses: int = 0
    duplicates: int = 0
    synthetic: int = 0
    malformed: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Copy:
    call: _Call
    message_id: str | None
    request_id: str | None
    tokens: int


def transcript_files(root: Path) -> list[tuple[Path, str]]:
    """Every ``*.jsonl`` under ``root`` (subagent files included) with its project's name.

    ``root`` is either the projects directory (each sub-directory a project) or one project's
    directory (it holds session files itself).
    """
    root = root.expanduser()
    if not root.is_dir():
        raise ConfigError("Claude Code transcript directory not found", path=str(root))
    # a session's own file before its subagents' files: a copy in both keeps the main session's prompt
    files = sorted((p for p in root.rglob("*.jsonl") if p.is_file()),
                   key=lambda p: (len(p.relative_to(root).parts), p.as_posix()))
    single = any(p.parent == root for p in files)
    return [(p, root.name if single else p.relative_to(root).parts[0]) for p in files]


def read_claude_code(root: str | Path, pricing: Pricing, scan: TranscriptScan | None = None) -> list[_Call]:
    """The priced calls of every transcript under ``root``, each response once (see the module doc).

    Lines that are not JSON, assistant lines without ``message.usage``, an unknown model or a bad
    token count go to ``scan.malformed`` with their file and line number.
    """
    scan = scan if scan is not None else TranscriptScan()
    copies: list[_Copy] = []
    for path, project in transcript_files(Path(root)):
        scan.files += 1
        copies.extend(_read_file(path, project, pricing, scan))
    return _dedupe(copies, scan)


def _read_file(path: Path, project: str, pricing: Pricing, scan: TranscriptScan) -> list[_Copy]:
    def bad(number: int, error: str) -> None:
        scan.malformed.append({"file": str(path), "line": number, "error": _short(error)})

    out: list[_Copy] = []
    prompt: str | None = None
    try:
        handle = path.open(encoding="utf-8", errors="replace")
    except OSError as exc:
        bad(0, f"cannot read the file: {exc.strerror}")
        return out
    with handle:
        for number, line in enumerate(_bounded_lines(handle), start=1):
            if line is None:
                bad(number, "line too long")
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                bad(number, f"invalid JSON: {exc.msg} at column {exc.colno}")
                continue
            except (RecursionError, ValueError):
                bad(number, "invalid JSON")
                continue
            if not isinstance(obj, dict):
                bad(number, "a line must be one JSON object")
                continue
            if obj.get("type") == "user":
                prompt = _prompt_text(obj.get("message")) or prompt
                continue
            if obj.get("type") != "assistant":
                continue
            try:
                copy = _assistant(obj, project, prompt, pricing)
            except ValueError as exc:
                bad(number, str(exc))
                continue
            if copy is None:
                scan.synthetic += 1
            else:
                out.append(copy)
    return out


def _assistant(obj: dict[str, Any], project: str, prompt: str | None, pricing: Pricing) -> _Copy | None:
    """One assistant line as a priced copy; None for a ``<synthetic>`` reply; ValueError if malformed."""
    message = obj.get("message")
    model = message.get("model") if isinstance(message, dict) else None
    if model == SYNTHETIC_MODEL:
        return None
    if not isinstance(message, dict) or not isinstance(message.get("usage"), dict):
        raise ValueError("assistant line without message.usage")
    model = _priced_model(obj, model, pricing, what="message.model")
    raw = message["usage"]
    usage: dict[str, Any] = dict(usage_tokens(raw))
    split = raw.get("cache_creation")
    if isinstance(split, dict):
        usage["cache_creation"] = split
    pricing.price_usage(model, usage)  # a bad cache split is a ValueError naming its field
    message_id = message.get("id") if isinstance(message.get("id"), str) and message.get("id") else None
    request_id = obj.get("requestId") if isinstance(obj.get("requestId"), str) and obj.get("requestId") else None
    call = _Call(_parse_time(obj["timestamp"]), None, model, usage, prompt, project=project)
    return _Copy(call, message_id, request_id, sum(usage[f] for f in USAGE_FIELDS))


def _prompt_text(message: Any) -> str | None:
    """The words a user typed (not tool results), for routing only."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = " ".join(b["text"] for b in content
                        if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str))
    else:
        return None
    return text.strip()[:_PROMPT_CHARS] or None


def _dedupe(copies: list[_Copy], scan: TranscriptScan) -> list[_Call]:
    """One call per response: key ``(message id, request id)``; a copy without a request id joins
    the keyed copy of its message; the copy with the most tokens stands for the response."""
    kept: list[_Copy] = []
    by_message: dict[str, dict[str | None, _Copy]] = {}
    for copy in copies:
        if copy.message_id is None:  # nothing to key on: counted as it is
            kept.append(copy)
            continue
        slot = by_message.setdefault(copy.message_id, {})
        held = slot.get(copy.request_id)
        if held is None:
            slot[copy.request_id] = copy
            continue
        scan.duplicates += 1
        if copy.tokens > held.tokens:
            slot[copy.request_id] = copy
    for slot in by_message.values():
        lone = slot.pop(None, None) if len(slot) > 1 else None
        if lone is not None:
            scan.duplicates += 1
            first = next(iter(slot))
            if lone.tokens > slot[first].tokens:
                slot[first] = lone
        kept.extend(slot.values())
    scan.responses = len(kept)
    return [c.call for c in kept]
