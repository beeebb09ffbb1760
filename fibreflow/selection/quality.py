"""Code quality of an attempt: ruff findings per changed line.

Only lines the attempt added or changed count, so a messy file the attempt merely touched does not
drag it down. The changed files are linted whole (from the sandbox when a reader is given, else
files the diff creates are rebuilt from it) and findings are kept only on changed lines.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@")


def changed_lines(diff: str) -> dict[str, dict[int, str]]:
    """Per file the diff touches: new line number -> text of each added line; deleted files left out."""
    files: dict[str, dict[int, str]] = {}
    current: dict[int, str] | None = None
    line_no = 0
    for line in diff.splitlines():
        if line.startswith("+++ "):
            path = line[4:].strip().split("\t")[0]
            current = None if path == "/dev/null" else files.setdefault(re.sub(r"^b/", "", path), {})
        elif line.startswith("--- "):
            continue
        elif (m := _HUNK.match(line)) is not None:
            line_no = int(m.group(1))
        elif current is not None and line.startswith("+"):
            current[line_no] = line[1:]
            line_no += 1
        elif current is not None and not line.startswith("-") and not line.startswith("\\"):
            line_no += 1
    return files


def _new_files(diff: str) -> set[str]:
    new, prev = set(), ""
    for line in diff.splitlines():
        if line.startswith("+++ ") and prev.startswith("--- /dev/null"):
            new.add(re.sub(r"^b/", "", line[4:].strip().split("\t")[0]))
        prev = line
    return new


def ruff_command() -> list[str] | None:
    """How to run ruff here (the venv's binary, one on PATH, or ``python -m ruff``), or None."""
    local = Path(sys.executable).with_name("ruff")
    if local.exists():
        return [str(local)]
    found = shutil.which("ruff")
    if found:
        return [found]
    try:
        import ruff  # noqa: F401
    except ImportError:
        return None
    return [sys.executable, "-m", "ruff"]


def ruff_findings(files: dict[str, str]) -> dict[str, list[int]]:
    """Line numbers of ruff's findings (its default rules, no project config) per file."""
    cmd = ruff_command()
    if cmd is None or not files:
        return {}
    with tempfile.TemporaryDirectory(prefix="ff-quality-") as tmp:
        for rel, text in files.items():
            target = Path(tmp) / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        proc = subprocess.run([*cmd, "check", "--isolated", "--no-cache", "--output-format", "json",
                               "--exit-zero", "."], cwd=tmp, capture_output=True, text=True, timeout=60,
                              check=False)
        try:
            report = json.loads(proc.stdout or "[]")
        except json.JSONDecodeError:
            return {}
        out: dict[str, list[int]] = {}
        for item in report:
            rel = str(Path(item["filename"]).resolve().relative_to(Path(tmp).resolve()))
            out.setdefault(rel, []).append(int(item["location"]["row"]))
    return out


def code_quality(diff: str, *, read_file: Callable[[str], str] | None = None) -> float | None:
    """1.0 for no findings on changed lines, falling as findings per changed line rise
    (``1 / (1 + 10 * rate)``: one finding per 20 changed lines gives 0.67); None when no Python
    line changed or ruff is not installed."""
    changed = {p: lines for p, lines in changed_lines(diff).items() if p.endswith(".py") and lines}
    if not changed or ruff_command() is None:
        return None
    new = _new_files(diff)
    contents: dict[str, str] = {}
    for path in changed:
        if read_file is not None:
            try:
                contents[path] = read_file(path)
                continue
            except (OSError, FileNotFoundError, ValueError):
                pass
        if path in new:
            contents[path] = "\n".join(changed[path][n] for n in sorted(changed[path])) + "\n"
    if not contents:
        return None
    findings = ruff_findings(contents)
    n_changed = sum(len(changed[p]) for p in contents)
    hits = sum(1 for p in contents for row in findings.get(p, []) if row in changed[p])
    return 1.0 / (1.0 + 10.0 * hits / n_changed)
