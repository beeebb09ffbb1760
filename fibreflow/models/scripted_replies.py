"""What the scripted model answers: Messages API replies and error bodies built from a turn."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fibreflow.models.scripted import ScriptedServer

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error",
               500: "api_error", 503: "api_error", 529: "overloaded_error"}
_ERROR_MESSAGES = {429: "Number of request tokens has exceeded your per-minute rate limit (scripted)",
                   529: "Overloaded (scripted)", 500: "Internal server error (scripted)"}
NO_TURN_LEFT = "(scripted model: the script has no reply left for this request)"


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """The API's error shape: ``{"type": "error", "error": {"type": ..., "message": ...}}``."""
    kind = ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message or _ERROR_MESSAGES.get(status, kind)}}


def last_user_text(messages: list[Any]) -> str:
    """The text of the last user message: its text blocks and tool_result contents."""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for block in content if isinstance(content, list) else []:
        if isinstance(block, dict):
            if block.get("type") == "text":
                parts.append(str(block.get("text", "")))
            elif block.get("type") == "tool_result":
                parts.append(_text_of(block.get("content")))
    return "\n".join(parts)


def _tokens(obj: Any) -> int:
    """A deterministic token estimate: about four characters a token."""
    text = obj if isinstance(obj, str) else json.dumps(obj, sort_keys=True, default=str)
    return max(1, len(text) // 4)


def _invalid(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "the request body must be a JSON object"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    if isinstance(body.get("max_tokens"), bool) or not isinstance(body.get("max_tokens"), int) \
            or body["max_tokens"] < 1:
        return "max_tokens: Field required (a positive integer)"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    if body.get("stream"):
        return "stream: the scripted model does not stream; call without stream=True"
    return None


def build_message(body: Any, owner: ScriptedServer, number: int) -> tuple[int, dict[str, Any], float | None]:
    """(status, JSON payload, the turn's latency) for one valid or invalid request."""
    problem = _invalid(body)
    if problem is not None:
        return 400, error_body(400, problem), None
    turn = owner._pick(last_user_text(body["messages"]), _text_of(body.get("system")))
    blocks = [dict(b) for b in turn.content] if turn is not None else [{"type": "text", "text": NO_TURN_LEFT}]
    for i, block in enumerate(blocks):
        if block.get("type") == "tool_use" and "id" not in block:
            block["id"] = f"toolu_scripted_{number:04d}_{i}"
    output_tokens = sum(_tokens(b.get("text") if b.get("type") == "text" else b.get("input", {})) for b in blocks)
    stop = turn.stop_reason if turn is not None else None
    if stop is None:
        stop = "tool_use" if any(b.get("type") == "tool_use" for b in blocks) else "end_turn"
    if output_tokens > body["max_tokens"] and stop != "max_tokens":
        # cut the reply as the API does: text truncated, unfinished tool calls dropped
        blocks = [dict(b, text=b["text"][: body["max_tokens"] * 4]) for b in blocks if b.get("type") == "text"]
        output_tokens, stop = body["max_tokens"], "max_tokens"
    prompt = {k: body.get(k) for k in ("system", "messages", "tools")}
    usage: dict[str, Any] = {"input_tokens": _tokens(prompt), "output_tokens": output_tokens,
                             "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
    if turn is not None and turn.usage:
        usage.update(turn.usage)
    message = {"id": f"msg_scripted_{number:06d}", "type": "message", "role": "assistant",
               "model": body["model"], "content": blocks, "stop_reason": stop, "stop_sequence": None,
               "usage": usage}
    return 200, message, turn.latency_s if turn is not None else None
