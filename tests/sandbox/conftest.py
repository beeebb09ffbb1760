"""Fixtures of the sandbox tests: a real git repository and a real local backend per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from repo_support import make_repo

from fibreflow.sandbox.local import LocalBackend


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small committed repository with a package, a test, a binary file and a .gitignore."""
    return make_repo(tmp_path / "repo", {
        "README.md": "# demo\n",
        "pkg/__init__.py": "",
        "pkg/calc.py": "def add(a, b):\n    return a + b\n",
        "tests/test_calc.py": "from pkg.calc import add\n\n\ndef test_add():\n    assert add(1, 2) == 3\n",
        "data.bin": bytes(range(256)),
        ".gitignore": "*.log\n",
    })


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[LocalBackend]:
    """A local backend whose state lives in this test's temp dir."""
    be = LocalBackend(state_dir=tmp_path / "state")
    yield be
    be.drain()
    leftover = [p.name for p in be.root.iterdir()] if be.root.exists() else []
    assert not leftover, f"sandboxes left behind: {leftover}"
