"""Store modes: URL parsing, the configured URL, extensions from pip packages, parameters as literals."""

from __future__ import annotations

import datetime as dt
import decimal
import subprocess
import sys
import uuid
from pathlib import Path

import duckdb
import pytest

from fibreflow.config import load_settings
from fibreflow.errors import StoreError, StoreUnreachable
from fibreflow.store import Store
from fibreflow.store.engines import FileEngine, open_engine
from fibreflow.store.extensions import ExtensionError, extension_path, load_extension
from fibreflow.store.quack import QuackEngine
from fibreflow.store.remote import bind


def test_urls_pick_their_engine(tmp_path: Path) -> None:
    settings = load_settings().store
    file_engine = open_engine(f"duckdb://{tmp_path}/a.duckdb", settings=settings)
    assert isinstance(file_engine, FileEngine) and file_engine.path == tmp_path / "a.duckdb"
    plain = open_engine(str(tmp_path / "b.duckdb"), settings=settings)
    assert isinstance(plain, FileEngine) and plain.url == f"duckdb://{tmp_path}/b.duckdb"
    quack = open_engine("quack://db.internal:7000", settings=settings)
    assert isinstance(quack, QuackEngine) and (quack.host, quack.port, quack.mode) == ("db.internal", 7000, "quack")
    default_port = open_engine("quack://localhost", settings=settings)
    assert isinstance(default_port, QuackEngine) and default_port.port == 9494


@pytest.mark.parametrize("url", ["quak://127.0.0.1:9494", "quack://", "quack://host:99999", "quack://a b:1",
                                 "duckdb://", "https://example.com/store"])
def test_a_mistyped_url_is_an_error_naming_it(url: str) -> None:
    with pytest.raises(StoreUnreachable) as info:
        open_engine(url)
    assert url in str(info.value)


def test_a_password_in_a_url_never_reaches_the_message() -> None:
    with pytest.raises(StoreUnreachable) as info:
        open_engine("postgres://fibre:hunter22@db/x")
    assert "hunter22" not in str(info.value) and "postgres://fibre:***@db/x" in str(info.value)


def test_the_configured_url_wins_over_db_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "elsewhere.duckdb"
    monkeypatch.setenv("FIBREFLOW_STORE", f"duckdb://{target}")
    store = Store()
    assert store.path == target
    # callers that pass db_path mean "the configured store": with store.url set, that is the URL
    assert Store(load_settings().db_path).path == target
    assert Store(tmp_path / "other.duckdb").path == tmp_path / "other.duckdb"
    store.insert_rows("sla_checks", [{"name": "a", "status": "ok", "checked_at": dt.datetime.now(dt.UTC)}])
    assert target.exists() and not load_settings().db_path.exists()


def test_a_quack_url_without_a_token_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIBREFLOW_STORE", "quack://127.0.0.1:9")
    with pytest.raises(StoreUnreachable, match=r"quack://127\.0\.0\.1:9: no token .*FIBREFLOW_STORE_TOKEN"):
        Store().scalar("SELECT 1")
    assert not load_settings().db_path.exists()  # no fallback to the file


def test_extensions_load_from_their_pip_packages_with_signatures_checked() -> None:
    con = duckdb.connect()
    load_extension(con, "quack")
    assert con.execute("SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'quack'").fetchone() == (True,)
    assert con.execute("SELECT current_setting('allow_unsigned_extensions')").fetchone() == (False,)


def test_a_missing_extension_package_names_the_pip_package() -> None:
    with pytest.raises(ExtensionError) as info:
        extension_path("quack", package="duckdb_extension_not_installed_here")
    assert f"pip install duckdb-extension-quack=={duckdb.__version__}" in str(info.value)


def test_an_extension_built_for_another_duckdb_names_both_versions(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "duckdb_extension_oldthing"
    (package / "extensions" / "v1.4.0").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "extensions" / "v1.4.0" / "oldthing.duckdb_extension").write_bytes(b"x")
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("duckdb_extension_oldthing", None)
    with pytest.raises(ExtensionError) as info:
        extension_path("oldthing")
    message = str(info.value)
    assert "v1.4.0" in message and f"v{duckdb.__version__}" in message
    assert f"pip install duckdb-extension-oldthing=={duckdb.__version__}" in message


VALUES = [None, True, False, 0, -7, 2**62, 1.5, -0.0, 1e300, float("inf"), "plain", "it's", "?$1 'x' -- not",
          "", decimal.Decimal("12.50"), dt.datetime(2026, 1, 2, 3, 4, 5, 6789, tzinfo=dt.UTC),
          dt.datetime(2026, 1, 2, 3, 4, 5), dt.date(2026, 2, 28), dt.timedelta(days=1, seconds=3, microseconds=9),
          uuid.UUID("12345678-1234-5678-1234-567812345678"), b"\x00\xffab", [1, 2, 3], ["a", "b'c"], []]


@pytest.mark.parametrize("value", VALUES, ids=[repr(v)[:30] for v in VALUES])
def test_parameters_written_as_literals_give_what_binding_gives(value: object) -> None:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    sql = "SELECT ? AS v" if value != [] else "SELECT ?::INTEGER[] AS v"
    bound = con.execute(sql, [value]).fetchall()
    literal = con.execute(bind(sql, [value])).fetchall()
    assert literal == bound


def test_placeholders_inside_strings_comments_and_casts_stay() -> None:
    sql = "SELECT '?', \"$1\", ?::VARCHAR, $name -- ? here\n"
    assert bind("SELECT '?' AS a, ?::BIGINT[] AS b -- ?", [[1, 2]]) == "SELECT '?' AS a, [1, 2]::BIGINT[] AS b -- ?"
    assert bind("SELECT $2, $1", ["a", "b"]) == "SELECT 'b', 'a'"
    assert bind(sql.replace("?::VARCHAR, ", ""), {"name": "it's"}) == "SELECT '?', \"$1\", 'it''s' -- ? here\n"


def test_rows_without_an_id_get_increasing_ids_from_their_writer(store: Store) -> None:
    now = dt.datetime.now(dt.UTC)
    store.insert_rows("sla_checks", [{"name": f"n{i}", "status": "ok", "checked_at": now} for i in range(5)])
    with store.writer(flush_interval_s=0.05) as writer:
        writer.put("sla_checks", {"name": "n5", "status": "ok", "checked_at": now})
    rows = store.query_df("SELECT id, name FROM sla_checks ORDER BY id")
    assert rows["id"].notna().all() and rows["id"].is_unique
    assert list(rows["name"]) == [f"n{i}" for i in range(6)]


def test_a_file_unit_holds_the_file_only_while_it_runs(tmp_path: Path) -> None:
    """The file is attached per unit of work: between units another process opens it (even to
    write), a read inside a read shares the unit, and a write inside a read is refused."""
    store = Store(tmp_path / "unit.duckdb")
    store.migrate()
    with store.connect() as outer:
        with store.connect() as inner:  # same thread, same unit: no second lock, no second attach
            assert inner.execute("SELECT count(*) FROM runs").fetchone() == (0,)
        assert outer.execute("SELECT current_database()").fetchone()[0].startswith("fibreflow_")
        with pytest.raises(StoreError, match="a write was asked for inside a read"), store.connect(write=True):
            pass
    script = ("import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
              "c.execute('CREATE TABLE written_between_units AS SELECT 42 AS x'); c.close()")
    subprocess.run([sys.executable, "-c", script, str(store.path)], check=True, timeout=60)
    assert store.scalar("SELECT x FROM written_between_units") == 42
