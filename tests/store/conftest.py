"""Fixtures of the store tests: ``lake``, a DuckLake of its own per test (lake_support)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from lake_support import Lake, new_lake


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[Lake]:
    """A lake with its own PostgreSQL catalog database and data directory, dropped afterwards."""
    with new_lake(tmp_path) as made:
        yield made
