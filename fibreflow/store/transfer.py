"""Copy a whole store from one mode to another (``fibreflow store migrate --to URL``): a file into
a store server's file or a lake, a lake back into a file.

The target is migrated first, then every table but ``schema_version`` (the target's migrations
wrote its own) is copied in one transaction of the target, in batches of multi-row ``VALUES``
(Python values keep every type exact, BIGINT ids and aware timestamps included); a reader of the
target sees all of it or none. A target that already holds rows is refused, since copying onto
them would double them, unless ``replace`` is given: then the copy replaces the target's rows in
that same transaction. Afterwards each table is counted on both sides.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import duckdb

from fibreflow.errors import StoreError
from fibreflow.store.connection import Store
from fibreflow.store.schema import TABLE_OWNERS

BATCH_ROWS = 100_000
_MAX_PARAMS = 2_000  # per INSERT statement
_STAGE = "_fibreflow_transfer_stage"


class TargetNotEmpty(StoreError):
    """The target of a copy already holds rows (and ``replace`` was not given)."""


@dataclass(frozen=True)
class TransferReport:
    """Rows per table on each side after a copy; ``equal`` when every count matches."""

    source: str
    target: str
    source_rows: dict[str, int] = field(default_factory=dict)
    target_rows: dict[str, int] = field(default_factory=dict)
    copied: int = 0

    @property
    def equal(self) -> bool:
        """Whether both sides hold the same number of rows in every table."""
        return self.source_rows == self.target_rows

    def mismatched(self) -> list[str]:
        """The tables whose counts differ."""
        return [t for t in self.source_rows if self.source_rows[t] != self.target_rows.get(t)]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for ``--json`` output."""
        return {"source": self.source, "target": self.target, "copied": self.copied, "equal": self.equal,
                "tables": {t: {"source": n, "target": self.target_rows.get(t)} for t, n in self.source_rows.items()}}


def store_tables() -> list[str]:
    """Every table of the schema, ``schema_version`` first."""
    return ["schema_version", *sorted(t for t in TABLE_OWNERS if t != "schema_version")]


def count_rows(store: Store, tables: Sequence[str]) -> dict[str, int]:
    """Rows per table of ``store`` (one read unit of work)."""
    with store.connect() as con:
        return {t: _count(con, t) for t in tables}


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    row = con.execute(f'SELECT count(*) FROM "{table}"').fetchone()
    return int(row[0]) if row else 0


def _copy_table(src: duckdb.DuckDBPyConnection, dst: duckdb.DuckDBPyConnection, table: str) -> int:
    cur = src.execute(f'SELECT * FROM "{table}"')
    names = [d[0] for d in cur.description or []]
    cols = ", ".join(f'"{n}"' for n in names)
    marks = "(" + ", ".join("?" for _ in names) + ")"
    step = max(1, _MAX_PARAMS // max(len(names), 1))
    # rows land in a local temporary table first, then move in one statement: a lake writes one
    # file (or one inlined batch) per statement, a server gets one request, not one per chunk
    dst.execute(f'CREATE OR REPLACE TEMP TABLE {_STAGE} AS SELECT {cols} FROM "{table}" LIMIT 0')
    copied = 0
    try:
        for rows in _chunks(cur):
            for i in range(0, len(rows), step):
                chunk = rows[i:i + step]
                dst.execute(f"INSERT INTO temp.{_STAGE} VALUES {', '.join([marks] * len(chunk))}",
                            [v for row in chunk for v in row])
            dst.execute(f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM temp.{_STAGE}')
            dst.execute(f"DELETE FROM temp.{_STAGE}")
            copied += len(rows)
    finally:
        dst.execute(f"DROP TABLE IF EXISTS temp.{_STAGE}")
    return copied


def _chunks(cur: duckdb.DuckDBPyConnection) -> Iterator[list[Any]]:
    while rows := cur.fetchmany(BATCH_ROWS):
        yield rows


def copy_store(source: Store, target: Store, *, replace: bool = False) -> TransferReport:
    """Copy every table of ``source`` into ``target`` (migrated first); see the module docstring."""
    source_name, target_name = _name(source), _name(target)
    if source_name == target_name:
        raise TargetNotEmpty(f"the target {target_name} is the source store itself")
    source.migrate()
    target.migrate()
    tables = store_tables()
    data_tables = tables[1:]
    held = {t: n for t, n in count_rows(target, data_tables).items() if n}
    if held and not replace:
        raise TargetNotEmpty(f"the target {target_name} already holds rows "
                         f"({', '.join(f'{t}: {n}' for t, n in sorted(held.items()))}); copying would double "
                         "them. Point --to at an empty store, or pass --replace to replace its rows")
    copied = 0
    with source.connect() as src, target.connect(write=True) as dst:
        dst.execute("BEGIN TRANSACTION")
        try:
            for table in data_tables:
                if replace:
                    dst.execute(f'DELETE FROM "{table}"')
                copied += _copy_table(src, dst, table)
            dst.execute("COMMIT")
        except Exception:
            dst.execute("ROLLBACK")
            raise
    return TransferReport(source_name, target_name, count_rows(source, tables), count_rows(target, tables),
                          copied)


def _name(store: Store) -> str:
    """How a store shows itself in messages: its URL (never a password or token)."""
    return store.url


__all__ = ["TargetNotEmpty", "TransferReport", "copy_store", "count_rows", "store_tables"]
