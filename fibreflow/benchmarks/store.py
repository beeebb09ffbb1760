"""Store under contention: 2 writer and 2 reader processes share one DuckDB file."""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from fibreflow.store import Store


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=5000, help="rows per writer (default 5000)")
    p.add_argument("--batch", type=int, default=50, help="rows per write (default 50)")
    p.add_argument("--seconds", type=float, default=10.0, help="least duration (default 10)")
    p.add_argument("--db", type=Path, default=None, help="DuckDB file (default: a temp file)")


def _writer(db: str, wid: int, rows: int, batch: int, seconds: float, out: mp.Queue) -> None:
    from fibreflow.sla.monitor import insert_checks  # the table's owner; loaded in the child process

    store = Store(db, lock_timeout_s=60)
    pause = seconds / max(1, rows // batch)
    written = errors = 0
    for start in range(0, rows, batch):
        t0 = time.monotonic()
        now = dt.datetime.now(dt.UTC)
        chunk = [{"name": f"bench-w{wid}", "status": "ok", "value": float(i), "checked_at": now}
                 for i in range(start, min(rows, start + batch))]
        try:
            written += insert_checks(store, chunk)
        except Exception:
            errors += 1
        time.sleep(max(0.0, pause - (time.monotonic() - t0)))
    out.put({"written": written, "errors": errors, "waits": store.wait_times_s})


def _reader(db: str, stop_at: float, out: mp.Queue) -> None:
    store = Store(db, lock_timeout_s=60)
    reads = errors = 0
    while time.time() < stop_at:
        t0 = time.monotonic()
        try:
            store.query_df("SELECT name, count(*) AS n FROM sla_checks GROUP BY name")
            reads += 1
        except Exception:
            errors += 1
        time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))
    out.put({"reads": reads, "errors": errors, "waits": store.wait_times_s})


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        db = str(args.db or Path(tmp) / "bench.duckdb")
        Store(db, lock_timeout_s=60).migrate()
        ctx = mp.get_context("spawn")
        out: mp.Queue = ctx.Queue()
        started = time.time()
        stop_at = started + args.seconds + 1.0
        procs = [ctx.Process(target=_writer, args=(db, w, args.rows, args.batch, args.seconds, out))
                 for w in range(2)]
        procs += [ctx.Process(target=_reader, args=(db, stop_at, out)) for _ in range(2)]
        for p in procs:
            p.start()
        results = [out.get(timeout=600) for _ in procs]
        for p in procs:
            p.join()
        elapsed = time.time() - started
        found = Store(db, lock_timeout_s=60).scalar(
            "SELECT count(*) FROM sla_checks WHERE name LIKE 'bench-w%'")
    waits = [w * 1000 for r in results for w in r["waits"]]
    return {
        "rows_written": sum(r.get("written", 0) for r in results),
        "rows_found": int(found),
        "errors": sum(r["errors"] for r in results),
        "wait_p50_ms": round(statistics.median(waits), 2) if waits else 0.0,
        "wait_p95_ms": round(_pct(waits, 0.95), 2),
        "wait_max_ms": round(max(waits), 2) if waits else 0.0,
        "reads": sum(r.get("reads", 0) for r in results),
        "duration_s": round(elapsed, 2),
        "processes": len(procs),
    }
