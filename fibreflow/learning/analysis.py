"""Failure analysis: what went wrong in an attempt, read from the evidence of a real run.

Evidence is what a command printed (test output, tracebacks, pytest's summary, ruff or mypy
findings), JUnit XML, the exit status and whether the sandbox killed the command and why. The
result names the error family, the module at fault, a fix to try and a normalized signature:
paths, numbers, hex addresses and quoted literals are stripped from the message, so the same
mistake made in two sandboxes, on two lines, with two object addresses has one signature.

``FailureAnalysis`` itself is defined with the attempt record in ``fibreflow.build.attempt``
(which carries it) and only re-exported here; the logic that fills it stays in learning.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any
from xml.etree import ElementTree

from fibreflow.build.attempt import FailureAnalysis
from fibreflow.learning.evidence import Evidence, evidence_of

# error_type values; Python exceptions outside these keep their own class name
FAMILIES = ("ModuleNotFoundError", "ImportError", "SyntaxError", "IndentationError", "NameError",
            "AttributeError", "TypeError", "ValueError", "AssertionError", "Timeout", "KilledMemory",
            "KilledProcesses", "LintFailure", "TypeCheckFailure", "SmokeTestFailure", "DeployFailure",
            "Unknown")

_EXC_LINE = re.compile(r"^(?:E\s+)?(?P<type>(?:[A-Za-z_][\w]*\.)*[A-Z]\w*(?:Error|Exception|Exit|Failed|Warning|"
                       r"Interrupt|Iteration)|AssertionError|KeyError)(?::\s*(?P<msg>.*))?$", re.MULTILINE)
_SUMMARY = re.compile(r"^(?P<kind>FAILED|ERROR)\s+(?P<node>\S+?)(?:\s+-\s+(?P<rest>.*))?$", re.MULTILINE)
_FILE_LINE = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+)')
_RUFF = re.compile(r"^(?P<file>[^\s:]+\.pyi?):(?P<line>\d+):(?P<col>\d+): (?P<code>[A-Z]+\d+) (?P<msg>.*)$",
                   re.MULTILINE)
_RUFF_FULL = re.compile(r"^(?P<code>[A-Z]+\d+) (?:\[\*\] )?(?P<msg>.*)\n\s*--> (?P<file>[^\s:]+):(?P<line>\d+):(?P<col>\d+)",
                        re.MULTILINE)
_MYPY = re.compile(r"^(?P<file>[^\s:]+\.pyi?):(?P<line>\d+): error: (?P<msg>.*?)(?:\s+\[(?P<code>[\w-]+)\])?$",
                   re.MULTILINE)
_NO_MODULE = re.compile(r"No module named '([\w.]+)'")
_CANNOT_IMPORT = re.compile(r"cannot import name '(\w+)' from '([\w.]+)'")
_NAME = re.compile(r"name '(\w+)' is not defined")
_ATTR = re.compile(r"'?([\w.]+)'? object has no attribute '(\w+)'|module '([\w.]+)' has no attribute '(\w+)'")
_PROCESS_LIMIT = re.compile(r"Resource temporarily unavailable|can't start new thread|fork: retry|"
                            r"BlockingIOError: \[Errno 11\]", re.IGNORECASE)

_QUOTED = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"")
_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:/[\w.@+-]+){2,}/?|(?:[\w.-]+/)+[\w.-]+\.\w+")
_NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_VOLATILE = re.compile(r"\d{4,}|[0-9a-f]{8,}|^tmp|^pytest-")
_PATH_PREFIX = re.compile(r"^.*/(?=[^/]+/[^/]+$)")
_STRIP_ROOTS = re.compile(r"^.*/(?:site-packages|dist-packages|workspace|src)/")


def normalize_message(text: str) -> str:
    """``text`` with quoted literals, hex addresses, paths and numbers replaced by placeholders."""
    text = _QUOTED.sub("<str>", text)
    text = _HEX.sub("<hex>", text)
    text = _PATH.sub("<path>", text)
    text = _NUMBER.sub("<n>", text)
    return re.sub(r"\s+", " ", text).strip()[:300]


def module_of(path: str | None) -> str | None:
    """A dotted module name for a file path, with sandbox and install prefixes removed."""
    if not path:
        return None
    rel = _STRIP_ROOTS.sub("", path.replace("\\", "/"))
    # drop components that differ per sandbox or temp dir (random ids, long numbers)
    parts = [p for p in rel.split("/") if p and p not in (".", "..") and not _VOLATILE.search(p)]
    if rel.startswith("/") or len(parts) > 3:
        parts = parts[-2:]  # an absolute path we could not anchor: its last two parts are stable
    if parts and parts[-1].endswith((".py", ".pyi")):
        parts[-1] = parts[-1].rsplit(".", 1)[0]
    return ".".join(parts) or None


def analyze_failure(outcome: Any) -> FailureAnalysis:
    """Analyze the failure of an attempt, command result, agent outcome or evidence mapping."""
    ev = outcome if isinstance(outcome, Evidence) else evidence_of(outcome)
    return replace(_analyze(ev), executed=ev.executed)


def _analyze(ev: Evidence) -> FailureAnalysis:
    text = ev.text
    killed = (ev.killed_reason or "").lower()
    if killed or ev.timed_out or ev.exit_code in (124, 137):
        if "mem" in killed or "oom" in killed or (ev.exit_code == 137 and "MemoryError" in text):
            return _make("KilledMemory", None, "killed: memory limit", ev.killed_reason or "memory")
        if "proc" in killed or "pid" in killed or "fork" in killed:
            return _make("KilledProcesses", None, "killed: process limit", ev.killed_reason or "processes")
        if "time" in killed or "cpu" in killed or ev.timed_out or ev.exit_code == 124:
            return _make("Timeout", None, "killed: timeout", ev.killed_reason or "timeout")
    if ev.stage in ("smoke", "deploy"):
        kind = "SmokeTestFailure" if ev.stage == "smoke" else "DeployFailure"
        last = _last_line(text)
        return _make(kind, ev.command and ev.command.split()[0], last, last)
    if limit := _PROCESS_LIMIT.search(text):
        return _make("KilledProcesses", None, "process limit", limit.group(0))
    if ev.stage == "typecheck" or (ev.command and "mypy" in ev.command) or (
            _MYPY.search(text) and "Found" in text and "error" in text):
        if m := _MYPY.search(text):
            code = m.group("code") or "error"
            return _make("TypeCheckFailure", module_of(m.group("file")), f"{code}: {m.group('msg')}",
                         m.group(0), location=f"{m.group('file')}:{m.group('line')}", subject=code)
    if ev.stage == "lint" or (ev.command and "ruff" in ev.command) or _RUFF.search(text) or _RUFF_FULL.search(text):
        if m := _RUFF.search(text) or _RUFF_FULL.search(text):
            return _make("LintFailure", module_of(m.group("file")), f"{m.group('code')}: {m.group('msg')}",
                         m.group(0), location=f"{m.group('file')}:{m.group('line')}", subject=m.group("code"))
    junit = _junit_failures(ev.junit_xml) if ev.junit_xml else []
    summary = [(m.group("node"), m.group("rest") or "") for m in _SUMMARY.finditer(text)]
    exc = _last_exception(text)
    failing = tuple(dict.fromkeys([n for n, _ in junit] + [n for n, _ in summary]))
    if exc is None:
        for _, rest in junit + summary:
            if m := _EXC_LINE.match(rest.strip()):
                exc = (m.group("type"), m.group("msg") or "", None)
                break
    if exc is None:
        if "MemoryError" in text:
            return _make("KilledMemory", None, "MemoryError", "MemoryError")
        if failing:
            return _make("AssertionError", _test_module(failing[0]), "test failed", failing[0],
                         failing=failing, subject=_test_name(failing[0]))
        last = _last_line(text)
        return _make("Unknown", None, f"exit status {ev.exit_code}" if not last else last, last)
    etype, msg, location = exc
    etype = etype.rsplit(".", 1)[-1]
    return _from_exception(etype, msg, location, failing, text)


def _from_exception(etype: str, msg: str, location: tuple[str, str] | None,
                    failing: tuple[str, ...], text: str) -> FailureAnalysis:
    where = f"{location[0]}:{location[1]}" if location else None
    module = module_of(location[0]) if location else None
    line = f"{etype}: {msg}".strip()
    if etype in ("ModuleNotFoundError", "ImportError"):
        if m := _NO_MODULE.search(msg):
            return _make(etype, m.group(1), line, line, location=where, failing=failing, subject=m.group(1))
        if m := _CANNOT_IMPORT.search(msg):
            return _make(etype, m.group(2), line, line, location=where, failing=failing,
                         subject=f"{m.group(2)}.{m.group(1)}")
    if etype in ("SyntaxError", "IndentationError", "TabError"):
        etype = "IndentationError" if etype == "TabError" else etype
        return _make(etype, module, line, line, location=where, failing=failing)
    subject = None
    if etype == "NameError" and (m := _NAME.search(msg)):
        subject = m.group(1)
    elif etype == "AttributeError" and (m := _ATTR.search(msg)):
        subject = f"{m.group(1) or m.group(3)}.{m.group(2) or m.group(4)}"
    elif etype == "AssertionError" and failing:
        subject = _test_name(failing[0])
        module = module or _test_module(failing[0])
    if etype == "MemoryError":
        return _make("KilledMemory", module, line, line, location=where, failing=failing)
    return _make(etype, module, line, line, location=where, failing=failing, subject=subject)


def _make(error_type: str, module: str | None, message: str, example: str, *, location: str | None = None,
          failing: tuple[str, ...] = (), subject: str | None = None) -> FailureAnalysis:
    pattern = "|".join([error_type, module or "-", subject or "-", normalize_message(message)])
    fix = suggest_fix(error_type, module=module, subject=subject, location=location, example=example)
    return FailureAnalysis(error_type, module, pattern, fix,
                           message=example.strip()[:500], location=location, failing_tests=failing)


def _last_exception(text: str) -> tuple[str, str, tuple[str, str] | None] | None:
    matches = [m for m in _EXC_LINE.finditer(text) if not m.group("type").endswith("Warning")]
    if not matches:
        return None
    m = matches[-1]
    files = list(_FILE_LINE.finditer(text, 0, m.start()))
    location = None
    if files:  # the innermost frame outside the interpreter's own library is where the fault is
        own = [f for f in files if "/lib/python" not in f.group("file") or "site-packages" in f.group("file")]
        pick = (own or files)[-1]
        location = (pick.group("file"), pick.group("line"))
    if m.group("type") in ("SyntaxError", "IndentationError", "TabError") and (
            pm := re.search(r"\(([^()]+\.py), line (\d+)\)", m.group("msg") or "")):
        location = (pm.group(1), pm.group(2))
    return m.group("type"), (m.group("msg") or "").strip(), location


def _junit_failures(xml: str) -> list[tuple[str, str]]:
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError:
        return []
    out = []
    for case in root.iter("testcase"):
        for tag in ("failure", "error"):
            node = case.find(tag)
            if node is not None:
                name = "::".join(x for x in (case.get("classname"), case.get("name")) if x)
                detail = node.get("message") or (node.text or "").strip().splitlines()[-1:] or [""]
                out.append((name, detail if isinstance(detail, str) else detail[0]))
    return out


def _test_name(node: str) -> str:
    return re.sub(r"\[.*\]$", "", node.replace("::", ".").split("/")[-1])


def _test_module(node: str) -> str | None:
    return module_of(node.split("::")[0]) if "::" in node or node.endswith(".py") else None


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


_FIXES: Mapping[str, str] = {
    "ModuleNotFoundError": "'{s}' is not importable: add it to the project's dependencies, or fix the import "
                           "path if it is a module of the project.",
    "ImportError": "the import of '{s}' fails: check the name exists in that module and that there is no "
                   "circular import.",
    "SyntaxError": "the code does not parse at {loc}: fix the syntax before running anything else.",
    "IndentationError": "the indentation is broken at {loc}: use 4 spaces, never tabs.",
    "NameError": "'{s}' is used but never defined or imported in {m}: define or import it.",
    "AttributeError": "'{s}' does not exist: check the object's type and the attribute's spelling.",
    "TypeError": "a call in {m} passes the wrong number or types of arguments: check the signature.",
    "ValueError": "a value in {m} is out of the accepted range or format: validate inputs before use.",
    "AssertionError": "test {s} fails: read what it expects and change the code, not the test.",
    "Timeout": "the command ran out of time: look for infinite loops, blocking I/O or waits on the network.",
    "KilledMemory": "the command ran out of memory: stream data instead of loading it all, cap caches.",
    "KilledProcesses": "too many processes or threads: bound pools and do not fork per item.",
    "LintFailure": "ruff reports {s} in {m}: fix the finding rather than silencing it.",
    "TypeCheckFailure": "mypy reports {s} in {m}: make the types agree.",
    "SmokeTestFailure": "the deployed service failed its smoke test: check it starts and answers.",
    "DeployFailure": "the deploy command failed: check its configuration and the build artifacts.",
}


def suggest_fix(error_type: str, *, module: str | None = None, subject: str | None = None,
                location: str | None = None, example: str = "") -> str:
    """A short fix to try for one failure family."""
    template = _FIXES.get(error_type, "read the error and the failing step's output: " + example.strip()[:120])
    return template.format(s=subject or module or "?", m=module or "the changed code",
                           loc=_PATH_PREFIX.sub("", location) if location else module or "the reported line")
