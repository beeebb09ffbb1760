"""A DuckLake for one test: its own PostgreSQL database on 127.0.0.1:5432 (the catalog) and a data
directory under the test's temp dir, so runs never share a catalog."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from fibreflow.store import Store

PG_ADMIN = os.environ.get("FIBREFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


@dataclass(frozen=True)
class Lake:
    """One test's lake: ``url`` for ``store.url``, ``data_path`` for ``store.data_path``."""

    dbname: str
    data_path: Path

    @property
    def conninfo(self) -> str:
        return f"dbname={self.dbname} host=127.0.0.1 port=5432 user=postgres"

    @property
    def url(self) -> str:
        return f"ducklake:postgres:{self.conninfo}"

    def config(self, path: Path, *, extra: str = "") -> Path:
        """Write a ``fibreflow.yaml`` at ``path`` whose store is this lake; returns ``path``."""
        path.write_text(f"store:\n  url: '{self.url}'\n  data_path: '{self.data_path}'\n{extra}")
        return path

    def store(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, extra: str = "") -> Store:
        """The configured store, pointed at this lake by a config file in force (as a user would)."""
        config = self.config(tmp_path / f"{self.dbname}.yaml", extra=extra)
        monkeypatch.setenv("FIBREFLOW_CONFIG", str(config))
        store = Store()
        store.migrate()
        return store

    def parquet_files(self, table: str | None = None) -> list[Path]:
        """The data files on disk (of one table of the store's ``main`` schema)."""
        root = self.data_path / "main" / table if table else self.data_path
        return sorted(root.rglob("*.parquet"))


def _admin(sql: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as con:
        con.execute(sql)


@contextmanager
def new_lake(tmp_path: Path) -> Iterator[Lake]:
    """A fresh, empty lake (its database dropped afterwards); a test module's ``lake`` fixture."""
    name = "ff_lake_" + uuid.uuid4().hex[:12]
    try:
        _admin(f"CREATE DATABASE {name}")
    except psycopg.OperationalError as exc:  # CI starts PostgreSQL; a dead server is a real failure
        pytest.fail(f"PostgreSQL at {PG_ADMIN} is not answering: {exc}")
    try:
        yield Lake(name, tmp_path / "lake-data")
    finally:
        _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
