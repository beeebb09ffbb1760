"""The twelve example SLAs against local sources: cycle time, a hanging source, alert latency, compliance.

Sources are built by :class:`fibreflow.sla.localdata.LocalDataLayer` (the real PostgreSQL in
a throw-away schema, SQLite and DuckDB files, image folders, an HTTP server on 127.0.0.1) and
measured through ``data/slas.example.yaml`` itself, with its environment variables pointed at
them. Alerts go to :class:`fibreflow.testing.slack_receiver.SlackReceiver` through slack_sdk.

* ``cycle_s``: median wall time of one full cycle (12 checks, store insert, alert evaluation).
* ``hang_cycle_s``: one cycle while the VLM server hangs, its check given ``--hang-timeout``
  (``hang_over_timeout_s``: what the cycle cost beyond that timeout: the store insert and
  the alert the error raises).
* ``alert_latency_p95_s``: from the end of the check that saw a violation (or its recovery) to
  the message's arrival at the local Slack.
* ``compliance_query_ms``: median time of ``compute_compliance`` over 30 days of 12 SLAs x
  1 check/min (518,400 rows).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fibreflow.errors import BenchmarkError
from fibreflow.yamlio import environ_overlay

EXAMPLE = Path(__file__).resolve().parents[2] / "data" / "slas.example.yaml"
ALERT_SLA = "neon_to_convex_max_delay"
HANG_SLA = "vlm_server_max_response"
ROWS_PER_SLA_30D = 30 * 24 * 60


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=EXAMPLE, help="SLA file (default data/slas.example.yaml)")
    p.add_argument("--pg", default=os.environ.get("FIBREFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"),
                   help="PostgreSQL DSN for the Neon stand-in tables (a temporary schema is used)")
    p.add_argument("--cycles", type=int, default=9, help="cycles timed for cycle_s (default 9)")
    p.add_argument("--alerts", type=int, default=10, help="violation/recovery pairs timed (default 10)")
    p.add_argument("--hang-timeout", type=float, default=2.0, help="timeout of the hanging check (default 2)")
    p.add_argument("--compliance-runs", type=int, default=5, help="timed compliance queries (default 5)")


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else values[0]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from fibreflow.sla.alerts import AlertDispatcher
    from fibreflow.sla.config import load_sla_config
    from fibreflow.sla.localdata import LocalDataLayer
    from fibreflow.sla.monitor import SLAMonitor
    from fibreflow.store import Store
    from fibreflow.testing.slack_receiver import SlackReceiver

    with tempfile.TemporaryDirectory(prefix="fibreflow-bench-sla-") as tmp, \
            LocalDataLayer(Path(tmp) / "sources", pg_dsn=args.pg) as layer, \
            SlackReceiver() as slack, environ_overlay(layer.env()):
        config = load_sla_config(args.config)
        if len(config.checks) != 12:
            raise BenchmarkError(f"{args.config} defines {len(config.checks)} SLAs, the benchmark expects 12")
        # repeat alerts on every violation, so each sample is delivered
        config = dataclasses.replace(config, monitoring=config.monitoring.model_copy(update={"cooldown": 0}))
        store = Store(Path(tmp) / "bench.duckdb", lock_timeout_s=60)
        store.migrate()
        environ = {**os.environ, "SLACK_WEBHOOK_URL": slack.webhook_url, "OPS_WEBHOOK_URL": f"{slack.url}/ops"}
        dispatcher = AlertDispatcher(store, config.alerts, config.monitoring, environ=environ)
        monitor = SLAMonitor(config, store=store, alerts=dispatcher)

        monitor.check_all_slas()  # warm-up: imports, first connections
        cycle_times, not_ok = [], set()
        for _ in range(args.cycles):
            started = time.perf_counter()
            results = monitor.check_all_slas()
            cycle_times.append(time.perf_counter() - started)
            not_ok |= {f"{r.name}: {r.status} {r.reason or ''}".strip() for r in results if r.status != "ok"}
        if not_ok:
            raise BenchmarkError("local sources should all be fresh, but: " + "; ".join(sorted(not_ok)))

        latencies = _alert_latencies(monitor, layer, slack, args.alerts)

        layer.hang("/vlm/health")
        spec = config.checks[HANG_SLA]
        hung_config = dataclasses.replace(
            config, checks={**config.checks, HANG_SLA: dataclasses.replace(spec, timeout=args.hang_timeout)})
        hung = SLAMonitor(hung_config, store=store, alerts=dispatcher)
        started = time.perf_counter()
        hung_results = {r.name: r for r in hung.check_all_slas()}
        hang_cycle_s = time.perf_counter() - started
        if hung_results[HANG_SLA].status != "error":
            raise BenchmarkError(f"the hanging check reported {hung_results[HANG_SLA].status}, expected error")

        compliance_ms, rows = _compliance(Path(tmp) / "compliance.duckdb", list(config.slas),
                                          args.compliance_runs)
    return {
        "cycle_s": round(statistics.median(cycle_times), 4),
        "cycle_max_s": round(max(cycle_times), 4),
        "hang_cycle_s": round(hang_cycle_s, 4),
        "hang_timeout_s": args.hang_timeout,
        "hang_over_timeout_s": round(hang_cycle_s - args.hang_timeout, 4),
        "alert_latency_p95_s": round(_p95(latencies), 4),
        "alert_latency_p50_s": round(statistics.median(latencies), 4),
        "compliance_query_ms": round(compliance_ms, 2),
        "compliance_rows": rows,
        "slas": len(config.checks),
        "cycles": args.cycles,
        "alerts_timed": len(latencies),
    }


def _alert_latencies(monitor: Any, layer: Any, slack: Any, pairs: int) -> list[float]:
    """Violate ALERT_SLA, then recover it, ``pairs`` times; latency of every message."""
    latencies: list[float] = []
    for i in range(pairs):
        for age, expected in ((400.0, "violation"), (5.0, "ok")):
            layer.set_age(ALERT_SLA, age)
            before = len(slack.messages)
            result = next(r for r in monitor.check_all_slas() if r.name == ALERT_SLA)
            if result.status != expected:
                raise BenchmarkError(f"{ALERT_SLA} read {result.status} ({result.reason}), expected {expected}")
            detected = result.checked_at.timestamp() + result.duration_s
            try:
                message = slack.wait_for(before + 1, timeout=10.0)[before]
            except TimeoutError:
                raise BenchmarkError(f"alert {i} ({expected}) did not reach the local Slack in 10 s") from None
            latencies.append(max(0.0, message.received_at.timestamp() - detected))
    return latencies


def _compliance(db: Path, names: list[str], runs: int) -> tuple[float, int]:
    """Fill 30 days x 1 check/min for every SLA, then time compute_compliance."""
    import datetime as dt

    from fibreflow.sla.compliance import compute_compliance
    from fibreflow.sla.monitor import insert_synthetic_checks
    from fibreflow.store import Store

    store = Store(db, lock_timeout_s=60)
    store.migrate()
    now = dt.datetime.now(dt.UTC)
    total = ROWS_PER_SLA_30D * len(names)
    insert_synthetic_checks(store, names, total=total, now=now)
    found = int(store.scalar("SELECT count(*) FROM sla_checks"))
    if found != total:
        raise BenchmarkError(f"inserted {found} compliance rows, expected {total}")
    compute_compliance(store, days=30, now=now)  # warm-up
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        frame = compute_compliance(store, days=30, target=0.95, now=now)
        times.append((time.perf_counter() - started) * 1000)
    if len(frame) != len(names):
        raise BenchmarkError(f"compliance returned {len(frame)} SLAs, expected {len(names)}")
    return statistics.median(times), found
