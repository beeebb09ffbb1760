"""The ``claude`` agent's tools, executed only through a ``Sandbox``: ``bash`` and a file editor.

The editor has the name and input shape of Anthropic's text-editor tool
(``str_replace_based_edit_tool``, commands ``view`` / ``create`` / ``str_replace`` /
``insert``). Paths are relative to the sandbox's workspace (``/workspace/...`` is accepted).
Every problem the model can fix (unknown tool, malformed input, a ``str_replace`` that matches
zero or several times, a missing file) is a ``ToolError``: the loop hands its message back as a
``tool_result`` with ``is_error: true`` and goes on. Only a broken sandbox raises ``SandboxError``.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fibreflow.errors import SandboxError
from fibreflow.sandbox.base import Sandbox

BASH = "bash"
EDITOR = "str_replace_based_edit_tool"
TOOL_NAMES = (BASH, EDITOR)
EDITOR_COMMANDS = ("view", "create", "str_replace", "insert")
WORKSPACE = "/workspace"
_SNIPPET_LINES = 4
_KINDS = {str: "a string", int: "an integer", bool: "a boolean", list: "an array"}

TOOL_SPECS: list[dict[str, Any]] = [
    {"name": BASH,
     "description": "Run a shell command in the repository's workspace (a fresh bash per call, no network). "
                    "Returns stdout, stderr and the exit code; long output is clipped in the middle.",
     "input_schema": {"type": "object", "required": ["command"], "properties": {
         "command": {"type": "string", "description": "The bash command to run."},
         "restart": {"type": "boolean", "description": "Accepted for compatibility; every call is a fresh shell."},
     }}},
    {"name": EDITOR,
     "description": "View, create and edit files in the workspace. view of a file shows it with line numbers "
                    "(view_range [start, end], end -1 for the last line); view of a directory lists it two levels "
                    "deep. create writes file_text. str_replace replaces old_str, which must occur exactly once, "
                    "by new_str. insert puts new_str after line insert_line (0: at the top).",
     "input_schema": {"type": "object", "required": ["command", "path"], "properties": {
         "command": {"type": "string", "enum": list(EDITOR_COMMANDS)},
         "path": {"type": "string", "description": "Path relative to the workspace."},
         "file_text": {"type": "string", "description": "create: the content of the file."},
         "old_str": {"type": "string", "description": "str_replace: the exact text to replace."},
         "new_str": {"type": "string", "description": "str_replace / insert: the new text."},
         "insert_line": {"type": "integer", "description": "insert: the line after which to insert."},
         "view_range": {"type": "array", "items": {"type": "integer"}, "description": "view: [start, end]."},
     }}},
]
#: The Anthropic-defined versions of the same two tools (models from Claude 4 on are trained on them).
NATIVE_TOOL_SPECS: list[dict[str, Any]] = [
    {"type": "bash_20250124", "name": BASH},
    {"type": "text_editor_20250728", "name": EDITOR},
]


class ToolError(Exception):
    """A problem the model caused and can fix; its message is the ``tool_result`` it gets back."""


@dataclass(frozen=True)
class ToolResult:
    """What goes back to the model for one ``tool_use`` block."""

    text: str
    is_error: bool = False


def clip(text: str, limit: int) -> str:
    """``text`` cut to about ``limit`` characters, keeping its head and tail (errors are often last)."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 5
    tail = limit - head
    return f"{text[:head]}\n<response clipped: {len(text) - limit} characters omitted>\n{text[-tail:]}"


def _numbered(lines: list[str], first: int) -> str:
    return "\n".join(f"{n:6}\t{line}" for n, line in enumerate(lines, start=first))


def _field(data: Mapping[str, Any], name: str, kind: type, *, required: bool = True) -> Any:
    value = data.get(name)
    if value is None:
        if required:
            raise ToolError(f"missing required field '{name}'")
        return None
    if isinstance(value, bool) is not (kind is bool) or not isinstance(value, kind):
        raise ToolError(f"field '{name}' must be {_KINDS[kind]}, got {type(value).__name__} {value!r:.40}")
    return value


class SandboxTools:
    """Executes the agent's tool calls in one sandbox."""

    def __init__(self, sandbox: Sandbox, *, command_timeout_s: float = 300.0, max_output_chars: int = 12_000,
                 env: Mapping[str, str] | None = None) -> None:
        self.sandbox = sandbox
        self.command_timeout_s = command_timeout_s
        self.max_output_chars = max_output_chars
        self.env = dict(env or {})

    def execute(self, name: str, data: Any, *, timeout: float | None = None) -> ToolResult:
        """Run one tool call; a ``ToolError`` becomes an error result, a broken sandbox raises."""
        try:
            if name not in TOOL_NAMES:
                raise ToolError(f"unknown tool '{name}'; available tools: {', '.join(TOOL_NAMES)}")
            if not isinstance(data, Mapping):
                raise ToolError(f"the input of {name} must be a JSON object, got {type(data).__name__}")
            if name == BASH:
                return self.bash(data, timeout=timeout)
            return ToolResult(self.edit(data))
        except ToolError as exc:
            return ToolResult(f"Error: {exc}", is_error=True)

    # -- bash ----------------------------------------------------------------------------------

    def bash(self, data: Mapping[str, Any], *, timeout: float | None = None) -> ToolResult:
        """Run ``command`` in the sandbox; output and exit code go back, clipped."""
        if _field(data, "restart", bool, required=False) and data.get("command") is None:
            return ToolResult("Every command runs in a fresh shell: there is nothing to restart.")
        command = _field(data, "command", str)
        if not command.strip():
            raise ToolError("field 'command' is empty")
        limit = self.command_timeout_s if timeout is None else min(timeout, self.command_timeout_s)
        result = self.sandbox.run(command, timeout=max(1.0, limit), env=self.env)
        parts = [result.stdout.rstrip("\n")] if result.stdout.strip() else []
        if result.stderr.strip():
            parts.append(f"[stderr]\n{result.stderr.rstrip()}")
        if result.killed:
            parts.append(f"[killed: {result.killed_reason or 'limit reached'} (limit {limit:g}s wall clock)]")
        else:
            parts.append(f"[exit code {result.exit_code}]")
        return ToolResult(clip("\n".join(parts), self.max_output_chars), is_error=result.killed)

    # -- the editor ----------------------------------------------------------------------------

    def edit(self, data: Mapping[str, Any]) -> str:
        """One text-editor command; returns its report, raises ``ToolError`` for what the model can fix."""
        command = _field(data, "command", str)
        if command not in EDITOR_COMMANDS:
            raise ToolError(f"unknown command '{command}'; allowed: {', '.join(EDITOR_COMMANDS)}")
        path = self._path(_field(data, "path", str))
        if command == "view":
            return self._view(path, _field(data, "view_range", list, required=False))
        if command == "create":
            text = _field(data, "file_text", str)
            existed = self._exists(path)
            self._write(path, text)
            return f"File {'overwritten' if existed else 'created'}: {path}"
        if command == "str_replace":
            return self._str_replace(path, _field(data, "old_str", str), _field(data, "new_str", str, required=False))
        line = _field(data, "insert_line", int)
        return self._insert(path, line, _field(data, "new_str", str))

    def _path(self, raw: str) -> str:
        path = raw.strip()
        if path == WORKSPACE or path.startswith(WORKSPACE + "/"):
            path = path[len(WORKSPACE):].lstrip("/")
        elif path.startswith("/"):
            raise ToolError(f"{raw}: paths are relative to the workspace ({WORKSPACE})")
        return path or "."

    def _read(self, path: str) -> str:
        try:
            return self.sandbox.read_file(path)
        except FileNotFoundError:
            raise ToolError(f"{path} does not exist") from None
        except (SandboxError, OSError) as exc:
            raise ToolError(str(exc)) from None

    def _write(self, path: str, text: str) -> None:
        try:
            self.sandbox.write_files({path: text})
        except (SandboxError, OSError) as exc:
            raise ToolError(f"cannot write {path}: {exc}") from None

    def _exists(self, path: str) -> bool:
        try:
            self.sandbox.read_file(path)
        except (FileNotFoundError, SandboxError, OSError):
            return False
        return True

    def _view(self, path: str, view_range: list[Any] | None) -> str:
        try:
            text = self.sandbox.read_file(path)
        except FileNotFoundError:
            raise ToolError(f"{path} does not exist") from None
        except (SandboxError, OSError) as exc:
            return self._list_dir(path, view_range, exc)
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        first, last = 1, len(lines)
        if view_range is not None:
            if len(view_range) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) for n in view_range):
                raise ToolError("view_range must be two integers [start, end]")
            first, end = view_range
            last = len(lines) if end == -1 else end
            if not 1 <= first <= max(1, len(lines)) or last < first or last > len(lines):
                raise ToolError(f"view_range {view_range} is outside the file's lines 1..{len(lines)}")
        body = _numbered(lines[first - 1:last], first)
        return clip(f"Here's the result of running `cat -n` on {path}:\n{body}\n", self.max_output_chars)

    def _list_dir(self, path: str, view_range: list[Any] | None, cause: Exception) -> str:
        q = shlex.quote(path)
        result = self.sandbox.run(f"test -d {q} && find {q} -maxdepth 2 -not -path '*/.*' | sort",
                                  timeout=min(60.0, self.command_timeout_s), env=self.env)
        if result.exit_code != 0:
            raise ToolError(str(cause))
        if view_range is not None:
            raise ToolError("view_range applies to files, not to a directory")
        listing = result.stdout.rstrip("\n")
        return clip(f"Files and directories up to 2 levels deep in {path}, hidden items excluded:\n{listing}\n",
                    self.max_output_chars)

    def _str_replace(self, path: str, old: str, new: str | None) -> str:
        if old == "":
            raise ToolError("old_str is empty; use insert or create to add text")
        text = self._read(path)
        count = text.count(old)
        if count == 0:
            raise ToolError(f"No replacement was performed, old_str did not appear verbatim in {path}.")
        if count > 1:
            starts, at = [], text.find(old)
            while at != -1:
                starts.append(text.count("\n", 0, at) + 1)
                at = text.find(old, at + 1)
            raise ToolError(f"No replacement was performed. Multiple occurrences of old_str in lines {starts} "
                            f"of {path}. Include more context so that it is unique.")
        new = new or ""
        before = text[:text.index(old)]
        self._write(path, text.replace(old, new, 1))
        line = before.count("\n") + 1
        return self._snippet(path, before + new + text[len(before) + len(old):], line, new.count("\n"))

    def _insert(self, path: str, after: int, new: str) -> str:
        text = self._read(path)
        lines = text.split("\n")
        count = len(lines) - 1 if text.endswith("\n") else len(lines)
        if not 0 <= after <= count:
            raise ToolError(f"insert_line {after} is outside the file's lines 0..{count}")
        cut = sum(len(line) + 1 for line in lines[:after])
        if cut > len(text):  # after the last line of a file without a final newline
            text, cut = text + "\n", len(text) + 1
        piece = new if new.endswith("\n") else new + "\n"
        updated = text[:cut] + piece + text[cut:]
        self._write(path, updated)
        return self._snippet(path, updated, after + 1, piece.count("\n") - 1)

    def _snippet(self, path: str, text: str, line: int, extra_lines: int) -> str:
        lines = text.split("\n")
        if len(lines) > 1 and lines[-1] == "":
            lines.pop()
        first = max(1, line - _SNIPPET_LINES)
        last = min(len(lines), line + extra_lines + _SNIPPET_LINES)
        return (f"The file {path} has been edited. Here's the result of running `cat -n` on a snippet of "
                f"{path}:\n{_numbered(lines[first - 1:last], first)}\nReview the changes and make sure they are "
                "as expected.")


__all__ = ["BASH", "EDITOR", "EDITOR_COMMANDS", "NATIVE_TOOL_SPECS", "TOOL_NAMES", "TOOL_SPECS", "SandboxTools",
           "ToolError", "ToolResult", "clip"]
