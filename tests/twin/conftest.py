"""The twin tests' store: the seeded history of the twin benchmark, built once, copied per test."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fibreflow.store import Store
from fibreflow.twin.sample_data import fill_sample_history


@pytest.fixture(scope="session")
def sample_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three days of seeded history (SLA cycles, runs, attempts, model calls, patterns); never written."""
    path = tmp_path_factory.mktemp("twin-sample") / "fibreflow.duckdb"
    with pytest.MonkeyPatch.context() as mp:  # before any test's _isolated_env: isolate it here too
        mp.delenv("FIBREFLOW_CONFIG", raising=False)
        mp.setenv("FIBREFLOW_DB", str(path))
        store = Store(path, lock_timeout_s=30)
        store.migrate()
        fill_sample_history(store, days=3, seed=2, sla_interval_min=15)
    return path


@pytest.fixture
def filled(sample_db: Path, tmp_path: Path) -> Store:
    """This test's own copy of the sample store, free to write (a file copy, not a refill)."""
    path = tmp_path / "fibreflow.duckdb"
    shutil.copyfile(sample_db, path)
    store = Store(path, lock_timeout_s=30)
    store.migrate()
    return store
