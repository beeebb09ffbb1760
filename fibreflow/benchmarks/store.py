"""Store under contention: W writer and R reader processes share one store (file, server or lake).

``--backend duckdb`` (default): the embedded file; "wait" is the time from asking for the store
to holding an open connection (lock + open). ``--backend quack``: a store server this benchmark
starts on a temp file (the workers open the file and find the server, as every process does);
``--backend ducklake``: a lake whose catalog is a new database on PostgreSQL 127.0.0.1:5432
(created through database ``test``, dropped afterwards) and whose data sits in a temp directory.
For quack and ducklake "wait" is the time of one whole write or read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from fibreflow.errors import BenchmarkError
from fibreflow.store import Store

BACKENDS = ("duckdb", "quack", "ducklake")
PG_ADMIN = "dbname=test host=127.0.0.1 port=5432"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", choices=BACKENDS, default="duckdb", help="store mode (default duckdb: the file)")
    p.add_argument("--writers", type=int, default=2, help="writer processes (default 2)")
    p.add_argument("--readers", type=int, default=2, help="reader processes (default 2)")
    p.add_argument("--rows", type=int, default=5000, help="rows per writer (default 5000)")
    p.add_argument("--batch", type=int, default=50, help="rows per write (default 50)")
    p.add_argument("--seconds", type=float, default=10.0, help="least duration (default 10)")
    p.add_argument("--db", type=Path, default=None, help="DuckDB file for duckdb/quack (default: a temp file)")


def _open(url: str, data_path: str | None) -> Store:
    """The store, migrated: its client set up before anything is timed."""
    if data_path is None:
        store = Store(url, lock_timeout_s=60)
    else:
        from fibreflow.config import load_settings

        settings = load_settings()
        store_settings = settings.store.model_copy(update={"data_path": data_path})
        store = Store.from_url(url, settings=settings.model_copy(update={"store": store_settings}))
    store.migrate()
    return store


def _writer(url: str, data_path: str | None, timed: bool, wid: int, rows: int, batch: int, seconds: float,
            out: mp.Queue) -> None:
    from fibreflow.sla.monitor import insert_checks  # the table's owner; loaded in the child process

    store = _open(url, data_path)
    pause = seconds / max(1, rows // batch)
    written = errors = 0
    times: list[float] = []
    for start in range(0, rows, batch):
        t0 = time.monotonic()
        now = dt.datetime.now(dt.UTC)
        chunk = [{"name": f"bench-w{wid}", "status": "ok", "value": float(i), "checked_at": now}
                 for i in range(start, min(rows, start + batch))]
        try:
            written += insert_checks(store, chunk)
            times.append(time.monotonic() - t0)
        except Exception:
            errors += 1
        time.sleep(max(0.0, pause - (time.monotonic() - t0)))
    out.put({"written": written, "errors": errors, "waits": times if timed else store.wait_times_s})


def _reader(url: str, data_path: str | None, timed: bool, stop: Any, out: mp.Queue) -> None:
    store = _open(url, data_path)
    reads = errors = 0
    times: list[float] = []
    while not stop.is_set() or reads + errors == 0:  # reads for as long as anyone writes
        t0 = time.monotonic()
        try:
            store.query_df("SELECT name, count(*) AS n FROM sla_checks GROUP BY name")
            reads += 1
            times.append(time.monotonic() - t0)
        except Exception:
            errors += 1
        time.sleep(max(0.0, 0.1 - (time.monotonic() - t0)))
    out.put({"reads": reads, "errors": errors, "waits": times if timed else store.wait_times_s})


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


@contextmanager
def _backend(args: argparse.Namespace, tmp: Path) -> Iterator[tuple[str, str | None]]:
    """(the URL the workers open, the lake's data path or None) for the duration of the run."""
    db = str(args.db or tmp / "bench.duckdb")
    if args.backend == "duckdb":
        yield db, None
    elif args.backend == "quack":
        from fibreflow.store.server import StoreServer, free_port

        server = StoreServer(db, port=free_port())
        server.start()
        try:
            yield db, None  # the workers find the server beside the file, as every process does
        finally:
            server.stop()
    else:
        try:
            import psycopg
        except ImportError as exc:
            raise BenchmarkError(f"--backend ducklake needs psycopg: {exc}") from exc
        name = f"fibreflow_bench_{uuid.uuid4().hex[:12]}"
        try:
            with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
        except psycopg.Error as exc:
            raise BenchmarkError(f"--backend ducklake: PostgreSQL at 127.0.0.1:5432 ({PG_ADMIN}): {exc}") from exc
        try:
            yield f"ducklake:postgres:dbname={name} host=127.0.0.1 port=5432", str(tmp / "lake")
        finally:
            with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.writers < 1 or args.readers < 0:
        raise BenchmarkError("--writers must be at least 1 and --readers at least 0")
    timed = args.backend != "duckdb"
    with tempfile.TemporaryDirectory() as tmp, _backend(args, Path(tmp)) as (url, data_path):
        main = _open(url, data_path)
        ctx = mp.get_context("spawn")
        out: mp.Queue = ctx.Queue()
        stop = ctx.Event()
        started = time.time()
        procs = [ctx.Process(target=_writer, args=(url, data_path, timed, w, args.rows, args.batch, args.seconds, out))
                 for w in range(args.writers)]
        procs += [ctx.Process(target=_reader, args=(url, data_path, timed, stop, out)) for _ in range(args.readers)]
        for p in procs:
            p.start()
        results: list[dict[str, Any]] = []
        while sum("written" in r for r in results) < args.writers:
            results.append(out.get(timeout=600))
        stop.set()
        while len(results) < len(procs):
            results.append(out.get(timeout=600))
        for p in procs:
            p.join()
        elapsed = time.time() - started
        found = main.scalar("SELECT count(*) FROM sla_checks WHERE name LIKE 'bench-w%'")
        main.close()
    waits = [w * 1000 for r in results for w in r["waits"]]
    return {
        "backend": args.backend,
        "writers": args.writers,
        "readers": args.readers,
        "duckdb_version": duckdb.__version__,
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
