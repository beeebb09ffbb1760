"""A connection to a store server whose statements run on the server, whole.

DuckDB 1.5.5's Quack client cannot UPDATE, DELETE, upsert or create sequences through an
attached catalog, and cannot bind parameters to a statement sent with ``<catalog>.query(sql)``.
So every statement goes to the server as text (``SELECT * FROM <alias>.query(?)``) on the
attachment's own server connection, which keeps its transaction between statements, with its
parameters written into the text as SQL literals (``render``). The result stays a DuckDB result
on the client: ``fetchone``, ``fetchall``, ``fetchmany`` and ``df`` behave as on a local file.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import pandas as pd

from fibreflow.errors import StoreError

_TOKENS = re.compile(r"""
    (?P<skip>'(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|::|\$\$)
  | (?P<qmark>\?)
  | \$(?P<num>\d+)
  | \$(?P<name>[A-Za-z_][A-Za-z0-9_]*)
""", re.VERBOSE | re.DOTALL)
_BEGIN = re.compile(r"^\s*(BEGIN|START\s+TRANSACTION)\b", re.IGNORECASE)
_END = re.compile(r"^\s*(COMMIT|ROLLBACK|ABORT|END)\b", re.IGNORECASE)


def render(value: Any) -> str:
    """``value`` as a DuckDB SQL literal of the type DuckDB would bind it as."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return "NULL"
    if hasattr(value, "item") and not isinstance(value, (str, bytes, list, tuple, dict)):
        value = value.item()  # numpy scalars
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"'{value}'::DOUBLE" if math.isinf(value) else f"{value!r}::DOUBLE"
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if isinstance(value, dt.datetime):
        kind = "TIMESTAMP" if value.tzinfo is None else "TIMESTAMPTZ"
        return f"{kind} '{value.isoformat(sep=' ')}'"
    if isinstance(value, dt.date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, dt.time):
        return f"TIME '{value.isoformat()}'"
    if isinstance(value, dt.timedelta):
        micros = (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds
        return f"INTERVAL '{micros} microseconds'"
    if isinstance(value, uuid.UUID):
        return f"'{value}'::UUID"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "'" + "".join(f"\\x{b:02X}" for b in bytes(value)) + "'::BLOB"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(render(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{render(str(k))}: {render(v)}" for k, v in value.items()) + "}"
    raise StoreError(f"cannot send a {type(value).__name__} parameter to the store server")


def bind(sql: str, params: Sequence[Any] | Mapping[str, Any] | None) -> str:
    """``sql`` with its ``?``, ``$1`` and ``$name`` placeholders replaced by ``params`` as literals."""
    if not params:
        return sql
    positional = list(params) if not isinstance(params, Mapping) else []
    named = params if isinstance(params, Mapping) else {}
    used = 0

    def sub(match: re.Match[str]) -> str:
        nonlocal used
        if match.group("skip"):
            return match.group(0)
        if match.group("qmark"):
            if used >= len(positional):
                raise StoreError(f"the statement has more ? placeholders than the {len(positional)} parameters given")
            used += 1
            return render(positional[used - 1])
        if match.group("num"):
            index = int(match.group("num")) - 1
            if not 0 <= index < len(positional):
                raise StoreError(f"no parameter ${index + 1} among the {len(positional)} given")
            return render(positional[index])
        name = match.group("name")
        if name not in named:
            raise StoreError(f"no parameter ${name} given")
        return render(named[name])

    return _TOKENS.sub(sub, sql)


_KINDS: tuple[tuple[str, type[duckdb.Error]], ...] = (
    ("Duplicate key", duckdb.ConstraintException), ("violates", duckdb.ConstraintException),
    ("constraint", duckdb.ConstraintException), ("syntax error", duckdb.ParserException),
    ("does not exist", duckdb.CatalogException), ("Conversion Error", duckdb.ConversionException),
    ("not implemented", duckdb.NotImplementedException), ("TransactionContext", duckdb.TransactionException),
)


def _server_error(exc: duckdb.InvalidInputException, alias: str) -> duckdb.Error:
    """The server's error as the DuckDB exception a local file would raise, without the wrapper
    statement the client adds (the Quack client reports every server error as invalid input)."""
    text = str(exc)
    cut = text.find(f"LINE 1: SELECT * FROM {alias}.query(?)")
    text = (text[:cut] if cut >= 0 else text).rstrip()
    text = text.removeprefix("Invalid Input Error: ")
    if "connection id" in text or "Authentication" in text:
        return exc  # the session itself is gone: the engine reports it
    for marker, kind in _KINDS:
        if marker.lower() in text.lower():
            return kind(text)
    return duckdb.InvalidInputException(text)


class RemoteConnection:
    """What ``Store.connect`` yields for a store server: ``execute`` and the fetch methods of a
    ``DuckDBPyConnection``, each statement run on the server in this connection's session."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, alias: str) -> None:
        self._cursor = cursor
        self._alias = alias
        self.in_transaction = False

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> RemoteConnection:
        """Run one statement on the server; returns self, as DuckDB does."""
        text = bind(sql, params)
        try:
            self._cursor.execute(f"SELECT * FROM {self._alias}.query(?)", [text])
        except duckdb.InvalidInputException as exc:
            raise _server_error(exc, self._alias) from None
        if _BEGIN.match(sql):
            self.in_transaction = True
        elif _END.match(sql):
            self.in_transaction = False
        return self

    def executemany(self, sql: str, params: Sequence[Sequence[Any] | Mapping[str, Any]]) -> RemoteConnection:
        """Run ``sql`` once per parameter set."""
        for row in params:
            self.execute(sql, row)
        return self

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._cursor.fetchone()

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._cursor.fetchall()

    def fetchmany(self, size: int = 1) -> list[tuple[Any, ...]]:
        return self._cursor.fetchmany(size)

    def df(self) -> pd.DataFrame:
        return self._cursor.df()

    fetchdf = df
    fetch_df = df

    @property
    def description(self) -> Any:
        return self._cursor.description

    def close(self) -> None:
        """Nothing to do: the engine takes the connection back after the unit of work."""

    def __getattr__(self, name: str) -> Any:
        raise StoreError(f"{name}() is not available on a store server connection; use execute() and fetch*()")
