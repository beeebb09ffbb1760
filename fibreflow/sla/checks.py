"""The SLA check types: one function each, registered in :data:`CHECK_TYPES`.

A check function takes its validated parameters (a pydantic model, the same one the config
loader validates the YAML with), a ``timeout`` in seconds that bounds its own I/O, and
``now`` (UTC; defaults to the current time). It returns a :class:`Measurement` whose value
is in seconds (an age, a lag or a latency), or the printed number for ``command``. When the
source cannot be read it raises :class:`~fibreflow.errors.CheckError`; the monitor records
that as status ``error`` with the message as reason.

Timestamps without a time zone are taken as UTC (see :mod:`fibreflow.sla.sources`).
``${VAR}`` references in any string parameter are expanded by :func:`run_check`, at check
time, so a missing variable fails that one check only.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from fibreflow.errors import CheckError
from fibreflow.sla.sources import (
    age_seconds,
    http_get,
    http_json_value,
    newest_file,
    query_scalar,
    redact_url,
    to_utc,
)
from fibreflow.yamlio import expand_env

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


@dataclass(frozen=True)
class Measurement:
    """What a check read. ``violated`` marks a violation whatever the value (e.g. HTTP 503)."""

    value: float
    reason: str | None = None
    violated: bool = False
    details: dict[str, Any] = field(default_factory=dict)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- sources of sync_lag -----------------------------------------------------------------


class SqlSource(_Params):
    """The newest timestamp a SQL query returns."""

    type: Literal["sql"]
    url: str = Field(description="postgresql://..., duckdb:///PATH or sqlite:///PATH.")
    query: str = Field(description="Returns one timestamp, e.g. SELECT max(updated_at) FROM t.")


class HttpJsonSource(_Params):
    """A timestamp field of a JSON document served over HTTP."""

    type: Literal["http_json"]
    url: str = Field(description="GET URL answering JSON.")
    field: str = Field(description="Dotted path to the timestamp (ISO string or epoch s/ms).")
    headers: dict[str, str] | None = Field(None, description="Request headers, e.g. a ${TOKEN}.")


class FileSource(_Params):
    """The modification time of the newest file matching a glob."""

    type: Literal["file"]
    path: str = Field(description="Directory to look in.")
    glob: str = Field("*", description="Pattern relative to path; '**/' recurses.")


Source = Annotated[SqlSource | HttpJsonSource | FileSource, Field(discriminator="type")]


def source_timestamp(source: SqlSource | HttpJsonSource | FileSource, *, timeout: float) -> dt.datetime:
    """The newest timestamp of one sync_lag source, in UTC."""
    if isinstance(source, SqlSource):
        return to_utc(query_scalar(source.url, source.query, timeout=timeout), what="query result")
    if isinstance(source, HttpJsonSource):
        value = http_json_value(source.url, source.field, timeout=timeout, headers=source.headers)
        return to_utc(value, what=f"field {source.field!r}")
    return newest_file(source.path, source.glob)[1]


# -- parameters of each check type -------------------------------------------------------


class SqlFreshnessParams(_Params):
    url: str = Field(description="postgresql://..., duckdb:///PATH or sqlite:///PATH.")
    query: str = Field(description="Returns the newest timestamp, e.g. SELECT max(updated_at) FROM t.")


class SyncLagParams(_Params):
    source: Source = Field(description="Where data is written first.")
    target: Source = Field(description="Where it must arrive.")


class FileAgeParams(_Params):
    path: str = Field(description="Directory to look in.")
    glob: str = Field("*", description="Pattern relative to path; '**/' recurses.")


class HttpLatencyParams(_Params):
    url: str = Field(description="URL to request.")
    method: Literal["GET", "HEAD"] = Field("GET", description="HTTP method.")
    headers: dict[str, str] | None = Field(None, description="Request headers.")
    expect_status: list[int] | None = Field(None, description="Acceptable status codes; default any 2xx.")


class HeartbeatParams(_Params):
    url: str = Field(description="postgresql://..., duckdb:///PATH or sqlite:///PATH.")
    query: str | None = Field(None, description="Returns the time of the last event; or give table.")
    table: str | None = Field(None, description="Event table; the check reads max(column).")
    column: str = Field("created_at", description="Timestamp column of table.")

    @model_validator(mode="after")
    def _one_source(self) -> HeartbeatParams:
        if (self.query is None) == (self.table is None):
            raise ValueError("give exactly one of 'query' or 'table'")
        for name in ("table", "column"):
            value = getattr(self, name)
            if value is not None and "${" not in value and not _IDENT.match(value):
                raise ValueError(f"{name} must be an identifier (optionally schema.name), got {value!r}")
        return self


class CommandParams(_Params):
    command: str | list[str] = Field(description="Argument list, or a string split like a shell would.")
    shell: bool = Field(False, description="Run the string through /bin/sh (pipes, redirects).")
    cwd: str | None = Field(None, description="Working directory.")

    @model_validator(mode="after")
    def _shape(self) -> CommandParams:
        if not self.command:
            raise ValueError("command is empty")
        if self.shell and not isinstance(self.command, str):
            raise ValueError("with shell: true, command must be one string")
        return self


# -- the check functions -----------------------------------------------------------------


def sql_freshness(params: SqlFreshnessParams, *, timeout: float, now: dt.datetime | None = None) -> Measurement:
    """Age in seconds of the newest timestamp the query returns (naive timestamps are UTC)."""
    newest = to_utc(query_scalar(params.url, params.query, timeout=timeout), what="query result")
    return Measurement(age_seconds(newest, now), details={"newest": newest.isoformat()})


def sync_lag(params: SyncLagParams, *, timeout: float, now: dt.datetime | None = None) -> Measurement:
    """Seconds the target's newest timestamp trails the source's (0 when the target is ahead)."""
    deadline = time.monotonic() + timeout
    source = source_timestamp(params.source, timeout=timeout)
    target = source_timestamp(params.target, timeout=max(0.1, deadline - time.monotonic()))
    lag = max(0.0, (source - target).total_seconds())
    return Measurement(lag, details={"source": source.isoformat(), "target": target.isoformat()})


def file_age(params: FileAgeParams, *, timeout: float, now: dt.datetime | None = None) -> Measurement:
    """Age in seconds of the newest file matching ``glob`` under ``path``."""
    path, mtime = newest_file(params.path, params.glob)
    return Measurement(age_seconds(mtime, now), details={"newest": str(path), "mtime": mtime.isoformat()})


def http_latency(params: HttpLatencyParams, *, timeout: float, now: dt.datetime | None = None) -> Measurement:
    """Response time in seconds (body included); an unexpected status is a violation."""
    started = time.perf_counter()
    status, _ = http_get(params.url, timeout=timeout, headers=params.headers, method=params.method)
    elapsed = time.perf_counter() - started
    ok = status in params.expect_status if params.expect_status else 200 <= status < 300
    reason = None if ok else f"HTTP {status} from {redact_url(params.url)}"
    return Measurement(elapsed, reason=reason, violated=not ok, details={"status": status})


def heartbeat(params: HeartbeatParams, *, timeout: float, now: dt.datetime | None = None) -> Measurement:
    """Seconds since the last event row (``max(column)`` of ``table``, or ``query``)."""
    query = params.query or f"SELECT max({params.column}) FROM {params.table}"
    last = to_utc(query_scalar(params.url, query, timeout=timeout), what="last event")
    return Measurement(age_seconds(last, now), details={"last_event": last.isoformat()})


def command(params: CommandParams, *, timeout: float, now: dt.datetime | None = None) -> Measurement:
    """The number on the last non-empty line a command prints; non-zero exit is an error."""
    argv: str | list[str] = params.command if params.shell else (
        shlex.split(params.command) if isinstance(params.command, str) else list(params.command))
    try:
        proc = subprocess.run(argv, shell=params.shell, cwd=params.cwd, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, check=False)
    except subprocess.TimeoutExpired:
        raise CheckError(f"command timed out after {timeout:g}s") from None
    except OSError as exc:
        raise CheckError(f"cannot run command: {exc.strerror or exc}") from None
    if proc.returncode != 0:
        tail = " ".join(proc.stderr.strip().splitlines()[-1:])[:200]
        raise CheckError(f"command exited {proc.returncode}" + (f": {tail}" if tail else ""))
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    try:
        return Measurement(float(lines[-1]))
    except (IndexError, ValueError):
        shown = lines[-1][:60] if lines else ""
        raise CheckError(f"command printed no number (last line: {shown!r})") from None


CheckFunction = Callable[..., Measurement]

CHECK_TYPES: dict[str, CheckFunction] = {
    "sql_freshness": sql_freshness,
    "sync_lag": sync_lag,
    "file_age": file_age,
    "http_latency": http_latency,
    "heartbeat": heartbeat,
    "command": command,
}
"""Check type name -> function."""

CHECK_PARAMS: dict[str, type[_Params]] = {
    "sql_freshness": SqlFreshnessParams,
    "sync_lag": SyncLagParams,
    "file_age": FileAgeParams,
    "http_latency": HttpLatencyParams,
    "heartbeat": HeartbeatParams,
    "command": CommandParams,
}
"""Check type name -> the model its YAML parameters are validated with."""


def validate_params(check_type: str, raw: Mapping[str, Any]) -> BaseModel:
    """Validate a check's parameters (raises pydantic ValidationError; KeyError for a bad type)."""
    return CHECK_PARAMS[check_type].model_validate(dict(raw))


def expand_env_deep(value: Any, *, key: str) -> Any:
    """``value`` with ``${VAR}`` expanded in every string inside it."""
    if isinstance(value, str):
        return expand_env(value, key=key)
    if isinstance(value, Mapping):
        return {k: expand_env_deep(v, key=f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [expand_env_deep(v, key=f"{key}.{i}") for i, v in enumerate(value)]
    return value


def run_check(check_type: str, raw: Mapping[str, Any], *, timeout: float, now: dt.datetime | None = None,
              key: str = "check") -> Measurement:
    """Expand ``${VAR}``s, validate and run one check (MissingEnvError names a missing variable)."""
    params = expand_env_deep(dict(raw), key=key)
    try:
        model = validate_params(check_type, params)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise CheckError(f"invalid parameter {where} after expanding variables: {err['msg']}") from None
    return CHECK_TYPES[check_type](model, timeout=timeout, now=now)
