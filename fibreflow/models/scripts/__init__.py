"""Scripted conversations shipped for ``fibreflow demo`` and the tests, and the repository they fit.

``demo_feature.yaml`` is a whole ``claude``-agent attempt on ``DEMO_REPO``: the scripted model
views ``calc.py``, fixes ``add`` with ``str_replace``, runs the tests with ``bash`` and ends,
with usage numbers (cache writes and reads included) like the real API's. Its turns are chosen
by regex on the last user message, not by position, so parallel attempts can share one server.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from fibreflow.errors import ConfigError

SCRIPTS_DIR = Path(__file__).resolve().parent

#: The demo feature's repository: ``add`` subtracts, and its test says so.
DEMO_REPO: dict[str, str] = {
    "README.md": "# calc\n\nA tiny project for the fibreflow demo.\n",
    "calc.py": '"""Arithmetic helpers."""\n\n\ndef add(a: int, b: int) -> int:\n'
               '    """The sum of a and b."""\n    return a - b\n',
    "tests/test_calc.py": "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n\n\n"
                          "def test_add_negative():\n    assert add(-1, 1) == 0\n",
}
DEMO_FEATURE = {"id": "fix-add", "description": "Fix calc.add: it must return the sum of its arguments.",
                "test_command": "python -m pytest -q"}


def script_path(name: str | Path) -> Path:
    """A shipped script by name (``demo_feature``), or the path of a script file."""
    shipped = SCRIPTS_DIR / f"{name}.yaml"
    if isinstance(name, str) and "/" not in name and shipped.is_file():
        return shipped
    path = Path(name)
    if path.is_file():
        return path
    known = sorted(p.stem for p in SCRIPTS_DIR.glob("*.yaml"))
    raise ConfigError(f"no scripted conversation '{name}' (shipped: {', '.join(known)}; or give a file path)",
                      key="script")


def write_demo_repo(path: str | Path, *, git: bool = True) -> Path:
    """Write ``DEMO_REPO`` under ``path`` (committed to a new git repository unless ``git=False``)."""
    root = Path(path)
    for rel, text in DEMO_REPO.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    if git:
        ident = ["-c", "user.name=fibreflow demo", "-c", "user.email=demo@fibreflow.invalid"]
        for args in (["init", "-q"], ["add", "-A"], [*ident, "commit", "-q", "-m", "demo project"]):
            subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    return root


__all__ = ["DEMO_FEATURE", "DEMO_REPO", "SCRIPTS_DIR", "script_path", "write_demo_repo"]
