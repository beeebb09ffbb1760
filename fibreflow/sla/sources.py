"""Readers for SLA sources: a SQL scalar, a field of an HTTP JSON answer, the newest file.

Every reader takes a ``timeout`` and bounds its own I/O with it, so a check that the monitor
gave up on does not keep a connection or a query alive for long. Failures raise
:class:`~fibreflow.errors.CheckError` with a reason fit for the ``sla_checks.reason`` column:
it never contains a password (URLs are redacted).

Timestamps: a value without a time zone (PostgreSQL ``timestamp``, DuckDB ``TIMESTAMP``,
SQLite text such as ``2024-05-01 12:00:00``, an ISO string without offset) is taken as UTC.
Numbers are Unix epoch seconds; numbers above 1e11 are taken as milliseconds (Convex and
JavaScript clocks), which cannot be confused with seconds before the year 5138.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import math
import re
import sqlite3
import stat
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fibreflow.errors import CheckError
from fibreflow.redaction import redact_url

SQL_SCHEMES = ("postgresql://", "duckdb:///", "sqlite:///")
_MS_EPOCH_ABOVE = 1e11


def to_utc(value: Any, *, what: str = "value") -> dt.datetime:
    """A timestamp-like value as an aware UTC datetime; naive values are taken as UTC."""
    if isinstance(value, dt.datetime):
        ts = value
    elif isinstance(value, dt.date):
        ts = dt.datetime(value.year, value.month, value.day)
    elif isinstance(value, bool):
        raise CheckError(f"{what} is a boolean, not a timestamp")
    elif isinstance(value, int | float):
        seconds = float(value) / 1000.0 if abs(value) > _MS_EPOCH_ABOVE else float(value)
        if not math.isfinite(seconds):
            raise CheckError(f"{what} is not a finite number: {value!r}")
        return dt.datetime.fromtimestamp(seconds, dt.UTC)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"-?\d+(\.\d+)?", text):
            return to_utc(float(text), what=what)
        try:
            ts = dt.datetime.fromisoformat(text)
        except ValueError:
            raise CheckError(f"{what} is not a timestamp: {value[:60]!r}") from None
    else:
        raise CheckError(f"{what} is not a timestamp: {type(value).__name__} {str(value)[:60]!r}")
    if ts.tzinfo is None or ts.utcoffset() is None:
        return ts.replace(tzinfo=dt.UTC)
    return ts.astimezone(dt.UTC)


def age_seconds(ts: dt.datetime, now: dt.datetime | None = None) -> float:
    """Seconds from ``ts`` to ``now``; a timestamp in the future (clock skew) counts as 0."""
    now = now or dt.datetime.now(dt.UTC)
    return max(0.0, (now - ts).total_seconds())


# -- SQL ---------------------------------------------------------------------------------


def query_scalar(url: str, query: str, *, timeout: float) -> Any:
    """First column of the first row of ``query``; no row or NULL is a CheckError.

    ``url`` is ``postgresql://...`` (psycopg; ``postgres://`` too), ``duckdb:///PATH`` or
    ``sqlite:///PATH`` (PATH relative to the working directory; ``////abs`` for absolute,
    as in SQLAlchemy). DuckDB and SQLite files are opened read-only.
    """
    scheme = url.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme in ("postgresql", "postgres"):
        row = _pg_row(url, query, timeout=timeout)
    elif scheme == "duckdb":
        row = _duckdb_row(_file_path(url, "duckdb"), query, timeout=timeout)
    elif scheme == "sqlite":
        row = _sqlite_row(_file_path(url, "sqlite"), query, timeout=timeout)
    else:
        raise CheckError(f"unsupported database URL {redact_url(url)!r}: use one of {', '.join(SQL_SCHEMES)}")
    if row is None or row[0] is None:
        raise CheckError("query returned no rows")
    return row[0]


def _file_path(url: str, scheme: str) -> Path:
    prefix = f"{scheme}:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise CheckError(f"{scheme} URL must look like {prefix}PATH, got {url!r}")
    path = Path(url[len(prefix):].split("?", 1)[0])
    if not path.is_file():
        raise CheckError(f"{scheme} database file not found: {path}")
    return path


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _pg_row(url: str, query: str, *, timeout: float) -> Any:
    import psycopg

    try:
        con = psycopg.connect(url, connect_timeout=max(1, math.ceil(timeout)), autocommit=True)
    except psycopg.Error as exc:
        raise CheckError(f"cannot connect to {redact_url(url)}: {_one_line(exc)}") from None
    try:
        # server-side bound, so a query the monitor gave up on does not run on for ever
        con.execute(f"SET statement_timeout = {max(1, int(timeout * 1000))}")
        return con.execute(query).fetchone()
    except psycopg.Error as exc:
        raise CheckError(f"query failed: {_one_line(exc)}") from None
    finally:
        con.close()


def _duckdb_row(path: Path, query: str, *, timeout: float) -> Any:
    import duckdb

    try:
        con = duckdb.connect(str(path), read_only=True)
    except duckdb.Error as exc:
        raise CheckError(f"cannot open DuckDB {path}: {_one_line(exc)}") from None
    timer = threading.Timer(timeout, con.interrupt)
    timer.daemon = True
    timer.start()
    try:
        return con.execute(query).fetchone()
    except duckdb.Error as exc:
        raise CheckError(f"query failed: {_one_line(exc)}") from None
    finally:
        timer.cancel()
        con.close()


def _sqlite_row(path: Path, query: str, *, timeout: float) -> Any:
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
    except sqlite3.Error as exc:
        raise CheckError(f"cannot open SQLite {path}: {_one_line(exc)}") from None
    deadline = time.monotonic() + timeout
    con.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
    try:
        return con.execute(query).fetchone()
    except sqlite3.Error as exc:
        raise CheckError(f"query failed: {_one_line(exc)}") from None
    finally:
        con.close()


# -- HTTP --------------------------------------------------------------------------------


def http_get(url: str, *, timeout: float, headers: Mapping[str, str] | None = None,
             method: str = "GET") -> tuple[int, bytes]:
    """Status and body of a request; connection failures raise CheckError (HTTP errors do not)."""
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        raise CheckError(f"not an http(s) URL: {redact_url(url)!r}")
    request = urllib.request.Request(url, method=method, headers=dict(headers or {}))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http/https only)
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise CheckError(f"cannot reach {redact_url(url)}: {_one_line(reason)}") from None


def json_field(document: Any, field: str) -> Any:
    """The value at a dotted path (``data.items.0.updated_at``) of a JSON document."""
    node = document
    for part in field.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
            node = node[int(part)]
        else:
            raise CheckError(f"JSON answer has no field {field!r} (stopped at {part!r})")
    if node is None:
        raise CheckError(f"JSON field {field!r} is null")
    return node


def http_json_value(url: str, field: str, *, timeout: float,
                    headers: Mapping[str, str] | None = None) -> Any:
    """The value of ``field`` in the JSON that ``url`` answers; non-2xx is a CheckError."""
    status, body = http_get(url, timeout=timeout, headers=headers)
    if not 200 <= status < 300:
        raise CheckError(f"HTTP {status} from {redact_url(url)}")
    try:
        document = json.loads(body)
    except ValueError:
        raise CheckError(f"{redact_url(url)} did not answer JSON") from None
    return json_field(document, field)


# -- files -------------------------------------------------------------------------------


def newest_file(path: str | Path, pattern: str = "*") -> tuple[Path, dt.datetime]:
    """The most recently modified file matching ``pattern`` under ``path``, and its mtime (UTC)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise CheckError(f"directory not found: {root}")
    best: tuple[float, Path] | None = None
    try:
        for candidate in root.glob(pattern):
            try:
                st = candidate.stat()
            except OSError:
                continue  # removed while we looked
            if not stat.S_ISREG(st.st_mode):
                continue
            if best is None or st.st_mtime > best[0]:
                best = (st.st_mtime, candidate)
    except (OSError, ValueError) as exc:
        raise CheckError(f"cannot list {root}: {_one_line(exc)}") from None
    if best is None:
        raise CheckError(f"no file matches {pattern!r} under {root}")
    return best[1], dt.datetime.fromtimestamp(best[0], dt.UTC)
