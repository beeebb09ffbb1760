"""Shared fixtures: a real DuckDB file per test, the real PostgreSQL, live-test gating."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fibreflow.store import Store

PG_DSN = os.environ.get("FIBREFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-live", action="store_true", help="run tests that use real cloud credentials")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-live"):
        return
    skip = pytest.mark.skip(reason="live test: needs --run-live and credentials")
    for item in items:
        if "live" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory,
                  monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads the developer's config, store, state or secrets."""
    monkeypatch.setenv("FIBREFLOW_DB", str(tmp_path / "fibreflow.duckdb"))
    # one state dir per session: sandboxes prepare a minimal /etc there once
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path_factory.getbasetemp() / "state"))
    monkeypatch.delenv("FIBREFLOW_CONFIG", raising=False)
    monkeypatch.setenv("FIBREFLOW_ENV_FILE", str(tmp_path / ".env"))  # never the developer's ./.env
    for name in ("ANTHROPIC_API_KEY", "E2B_API_KEY", "SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL", "SLACK_SIGNING_SECRET",
                 "FIBREFLOW_STORE", "FIBREFLOW_STORE_TOKEN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    """A migrated store in a real DuckDB file under the test's temp dir."""
    s = Store(tmp_path / "fibreflow.duckdb", lock_timeout_s=30)
    s.migrate()
    return s


@pytest.fixture
def pg_dsn() -> str:
    """DSN of the real PostgreSQL on 127.0.0.1:5432 (database ``test``)."""
    psycopg = pytest.importorskip("psycopg")
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3):
            pass
    except psycopg.OperationalError as exc:  # CI starts it; a dead server is a real failure
        pytest.fail(f"PostgreSQL at {PG_DSN} is not answering: {exc}")
    return PG_DSN


@pytest.fixture
def pg_table(pg_dsn: str) -> Iterator[str]:
    """A fresh table name in the test database, dropped afterwards."""
    import psycopg

    name = f"ff_test_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(pg_dsn, autocommit=True) as con:
        con.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
def own_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``$TMPDIR`` inside the test's tmp_path: what a run leaves there (the autopilot's deploy
    checkouts of runs left awaiting go) goes with the test."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    return tmp


@pytest.fixture
def restored_environ(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """load_settings puts .env values into os.environ: put it back as it was after the test."""
    from fibreflow import config

    saved = dict(os.environ)
    monkeypatch.setattr(config, "_from_dotenv", {})
    yield
    os.environ.clear()
    os.environ.update(saved)
