"""SLA compliance over a rolling window, and the readers behind the SLA report.

Compliance is the share of checks that met the SLA. A ``warn`` check (dbt-style: past
``warn_after`` but within the SLA) still meets the SLA, so it counts as OK; it is reported
separately in ``warn_checks``. An ``error`` check (the source could not be read) does not
count as OK: freshness that cannot be shown is not met. The error budget is the share of
checks allowed to fail, ``(1 - target) * checks``; ``burn_rate`` is how much of it the window
used (1.0 = exactly used up, > 1 overspent) and ``error_budget_left = 1 - burn_rate``.

Every reader is one SQL statement filtered on ``checked_at`` (the table has no index; a
GROUP BY over 518,400 rows takes a few tens of milliseconds in DuckDB).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from fibreflow.errors import ConfigError
from fibreflow.store import StoreReader

OK_STATUSES = ("ok", "warn")
BAD_STATUSES = ("violation", "error")
#: Severity order used for "worst status"; colours in views follow it.
STATUS_RANK = {"ok": 0, "warn": 1, "error": 2, "violation": 3}

COMPLIANCE_COLUMNS = [
    "name", "checks", "ok_checks", "warn_checks", "violation_checks", "error_checks",
    "compliance", "target", "met", "error_budget_left", "burn_rate",
]

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _bucket_edge(start: dt.datetime, bucket_s: float) -> dt.datetime:
    """For ``checked_at > edge``: ``start`` moved back to the edge of its bucket (buckets are whole
    multiples of ``bucket_s`` since the epoch), so the first bucket is whole and holds still while
    ``now`` moves within it."""
    seconds = (start - _EPOCH).total_seconds() // bucket_s * bucket_s
    return _EPOCH + dt.timedelta(seconds=seconds) - dt.timedelta(microseconds=1)


def _window(days: float, now: dt.datetime | None) -> tuple[dt.datetime, dt.datetime]:
    if days <= 0:
        raise ConfigError(f"days must be positive, got {days}", key="days")
    end = now or dt.datetime.now(dt.UTC)
    if end.tzinfo is None:  # naive timestamps are UTC throughout fibreflow
        end = end.replace(tzinfo=dt.UTC)
    return end - dt.timedelta(days=days), end


def _name_filter(names: Sequence[str] | None) -> tuple[str, list[Any]]:
    if names is None:
        return "", []
    if not names:
        return " AND false", []
    return f" AND name IN ({', '.join('?' for _ in names)})", list(names)


def compute_compliance(store: StoreReader, *, days: float = 30, target: float = 0.95,
                       now: dt.datetime | None = None, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-SLA compliance over the ``days`` before ``now`` (one row per SLA, sorted by name).

    Columns: name, checks, ok_checks (ok + warn), warn_checks, violation_checks, error_checks,
    compliance (ok_checks / checks), target, met (compliance >= target), error_budget_left
    (1.0 untouched, negative overspent) and burn_rate (1.0 = on pace to use the budget
    exactly). SLAs in ``names`` without checks in the window get checks = 0, NaN ratios and
    met = False (unknown is not compliant).
    """
    if not 0 < target < 1:
        raise ConfigError(f"compliance target must be between 0 and 1 (exclusive), got {target}",
                          key="compliance_target")
    start, end = _window(days, now)
    where, params = _name_filter(names)
    counts = store.query_df(
        "SELECT name, count(*) AS checks,"
        " count(*) FILTER (WHERE status IN ('ok', 'warn')) AS ok_checks,"
        " count(*) FILTER (WHERE status = 'warn') AS warn_checks,"
        " count(*) FILTER (WHERE status = 'violation') AS violation_checks,"
        " count(*) FILTER (WHERE status = 'error') AS error_checks"
        " FROM sla_checks WHERE checked_at > ? AND checked_at <= ?" + where +
        " GROUP BY name", [start, end, *params])
    if names is not None:
        missing = [n for n in names if n not in set(counts["name"])]
        if missing:
            counts = pd.concat([counts, pd.DataFrame({"name": missing})], ignore_index=True)
    count_cols = ["checks", "ok_checks", "warn_checks", "violation_checks", "error_checks"]
    counts[count_cols] = counts[count_cols].fillna(0).astype("int64")
    df = counts.sort_values("name", ignore_index=True)
    checks = df["checks"].where(df["checks"] > 0)
    df["compliance"] = df["ok_checks"] / checks
    df["target"] = target
    df["met"] = (df["compliance"] >= target).fillna(False).astype(bool)
    df["burn_rate"] = (1 - df["compliance"]) / (1 - target)
    df["error_budget_left"] = 1 - df["burn_rate"]
    return df[COMPLIANCE_COLUMNS]


def status_by_hour(store: StoreReader, *, days: float = 30, now: dt.datetime | None = None,
                   names: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per SLA and UTC hour with checks: name, hour, checks, ok_share, worst_status, worst_rank.

    ``worst_rank`` follows ``STATUS_RANK`` (ok < warn < error < violation).
    """
    start, end = _window(days, now)
    start = _bucket_edge(start, 3600)
    where, params = _name_filter(names)
    df = store.query_df(
        "SELECT name, date_trunc('hour', checked_at) AS hour, count(*) AS checks,"
        " avg(CASE WHEN status IN ('ok', 'warn') THEN 1.0 ELSE 0.0 END) AS ok_share,"
        " max(CASE status WHEN 'ok' THEN 0 WHEN 'warn' THEN 1 WHEN 'error' THEN 2 ELSE 3 END) AS worst_rank"
        " FROM sla_checks WHERE checked_at > ? AND checked_at <= ?" + where +
        " GROUP BY ALL ORDER BY name, hour", [start, end, *params])
    by_rank = {rank: status for status, rank in STATUS_RANK.items()}
    df["worst_status"] = df["worst_rank"].map(by_rank)
    return df[["name", "hour", "checks", "ok_share", "worst_status", "worst_rank"]]


def values_over_time(store: StoreReader, *, days: float = 30, names: Sequence[str] | None = None,
                     now: dt.datetime | None = None, max_points: int = 500) -> pd.DataFrame:
    """Measured values per SLA in time buckets (at most ``max_points`` per SLA, never under a minute).

    Buckets are whole multiples of their length since the epoch and the window starts on a bucket
    edge, so a live view's data changes when a check arrives or a bucket fills, not each time
    ``now`` moves.

    Columns: name, checked_at (bucket start), value (the bucket's worst, i.e. largest, value),
    threshold, warn_after, error_after (the bucket's last), checks. Peaks survive the
    downsampling, so a violation never disappears from the chart.
    """
    start, end = _window(days, now)
    bucket_s = max(60, math.ceil((end - start).total_seconds() / max(1, max_points - 1)))
    start = _bucket_edge(start, bucket_s)
    where, params = _name_filter(names)
    return store.query_df(
        "SELECT name, time_bucket(to_seconds(?::BIGINT), checked_at, ?::TIMESTAMPTZ) AS checked_at,"
        " max(value) AS value, arg_max(threshold, checked_at) AS threshold,"
        " arg_max(warn_after, checked_at) AS warn_after, arg_max(error_after, checked_at) AS error_after,"
        " count(*) AS checks"
        " FROM sla_checks WHERE checked_at > ? AND checked_at <= ?" + where +
        " GROUP BY ALL ORDER BY name, checked_at", [bucket_s, _EPOCH, start, end, *params])


def violations(store: StoreReader, *, days: float = 30, now: dt.datetime | None = None,
               names: Sequence[str] | None = None, limit: int = 200) -> pd.DataFrame:
    """Violation and error episodes, newest first: runs of consecutive checks of one SLA with one bad status.

    Columns: name, status, started_at, last_seen_at, checks, worst_value, threshold, reason
    (of the last check), ongoing (the SLA's latest check in the window is part of it).
    """
    start, end = _window(days, now)
    where, params = _name_filter(names)
    return store.query_df(
        "WITH w AS (SELECT name, status, value, threshold, reason, checked_at,"
        "   max(checked_at) OVER (PARTITION BY name) AS latest,"
        "   CASE WHEN status IS DISTINCT FROM lag(status) OVER (PARTITION BY name ORDER BY checked_at)"
        "        THEN 1 ELSE 0 END AS starts"
        "   FROM sla_checks WHERE checked_at > ? AND checked_at <= ?" + where + "),"
        " g AS (SELECT *, sum(starts) OVER (PARTITION BY name ORDER BY checked_at"
        "   ROWS UNBOUNDED PRECEDING) AS episode FROM w)"
        " SELECT name, any_value(status) AS status, min(checked_at) AS started_at,"
        "   max(checked_at) AS last_seen_at, count(*) AS checks, max(value) AS worst_value,"
        "   arg_max(threshold, checked_at) AS threshold, arg_max(reason, checked_at) AS reason,"
        "   max(checked_at) = any_value(latest) AS ongoing"
        " FROM g WHERE status IN ('violation', 'error') GROUP BY name, episode"
        " ORDER BY started_at DESC, name LIMIT ?", [start, end, *params, limit])


def compliance_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """``compute_compliance`` rows as JSON-safe dicts (NaN becomes None)."""
    out = []
    for row in df.to_dict(orient="records"):
        out.append({k: (None if isinstance(v, float) and math.isnan(v) else
                        v.item() if hasattr(v, "item") else v) for k, v in row.items()})
    return out
