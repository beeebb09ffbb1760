"""``fibreflow store serve [--port 9494] [--ip 127.0.0.1] [--db PATH]``: serve the store file.

One process owns the DuckDB file and serves it over DuckDB's Quack protocol; while it runs,
every fibreflow process on this host that opens that file (CLI, SLA watcher, builds, reports,
the twin's kernels) goes through it, found by ``<db>.server.json`` beside the file; no flag is
needed. Other hosts use ``store.url: quack://HOST:PORT`` (put TLS in front, see README).

The token is ``FIBREFLOW_STORE_TOKEN`` if set, else a new random one; either way it is kept in
``<db>.server.token`` (mode 0600) for this host's clients, and never printed.
"""

from __future__ import annotations

import argparse
import sys
import threading
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("store", help="the store: serve it to many processes and hosts",
                       description="The store: `serve` shares the DuckDB file with every process on the host "
                                   "(and other hosts, behind TLS).")
    commands = p.add_subparsers(dest="store_command", metavar="SUBCOMMAND")
    serve = commands.add_parser("serve", help="own the store file and serve it over Quack", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    serve.add_argument("--port", type=int, default=9494, help="port to serve on (default 9494)")
    serve.add_argument("--ip", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1: this machine only; put TLS in front otherwise)")
    serve.add_argument("--db", type=Path, default=None, help="the store file (default: store.url when it is a file, else db_path / FIBREFLOW_DB)")
    serve.set_defaults(func=_serve)
    _register_lake(commands)
    p.set_defaults(func=lambda args: _no_subcommand(p))


def _no_subcommand(parser: argparse.ArgumentParser) -> int:
    from fibreflow.cli import EXIT_USAGE

    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _serve(args: argparse.Namespace) -> int:
    from fibreflow.cli import EXIT_OK, usage_error
    from fibreflow.config import load_settings
    from fibreflow.store.server import StoreServer

    settings = load_settings()
    if not 0 < args.port < 65536:
        return usage_error("store serve", f"--port {args.port}: not a port (1-65535)")
    db = args.db
    if db is None:
        from fibreflow.store.engines import FileEngine, open_engine

        engine = open_engine(settings.store.url or str(settings.db_path), settings=settings.store)
        if not isinstance(engine, FileEngine):
            return usage_error("store serve", f"store.url is {engine.url}, not a file; pass --db PATH to serve a file")
        db = engine.path
    server = StoreServer(db, host=args.ip, port=args.port, lock_timeout_s=settings.store.lock_timeout_s)

    def ready(record: object) -> None:
        print(f"fibreflow store: serving {server.db} at {server.url} (pid {getattr(record, 'pid', '?')}, "
              f"schema version {server.version}); token in {getattr(record, 'token_file', '?')}; "
              "Ctrl-C stops", flush=True)

    stop = threading.Event()
    try:
        server.serve_until(stop, on_ready=ready)
    except KeyboardInterrupt:
        print("fibreflow store: stopped", file=sys.stderr, flush=True)
        raise
    return EXIT_OK


def _register_lake(ssub: argparse._SubParsersAction) -> None:
    """``store migrate --to URL`` and ``store compact`` (lake helper's part of this module)."""
    migrate = ssub.add_parser("migrate", help="copy every table of the configured store to another store",
                              description="Copy every table of the configured store into the store at --to "
                              "(migrated first), then print the rows per table on both sides: exit 0 when "
                              "they match, 1 when not. A target that holds rows is refused (exit 2) unless "
                              "--replace, which replaces its rows in the same transaction.")
    migrate.add_argument("--to", required=True, metavar="URL", dest="target",
                         help="duckdb:///abs/path.duckdb, quack://host:port or ducklake:postgres:<conninfo> "
                              "(a lake takes store.data_path from the configuration, or --data-path)")
    migrate.add_argument("--data-path", default=None, metavar="DIR",
                         help="the target lake's data path (default: store.data_path)")
    migrate.add_argument("--replace", action="store_true", help="replace the rows a non-empty target holds")
    migrate.add_argument("--json", action="store_true", help="print one JSON object")
    migrate.set_defaults(func=_migrate)
    compact = ssub.add_parser("compact", help="lake only: flush inlined rows, merge small files, expire snapshots")
    compact.add_argument("--retention", type=float, default=None, metavar="S",
                         help="expire snapshots older than S seconds (default: store.snapshot_retention_s)")
    compact.add_argument("--json", action="store_true", help="print one JSON object")
    compact.set_defaults(func=_compact)


def _migrate(args: argparse.Namespace) -> int:
    from fibreflow.cli import EXIT_FAILED, EXIT_OK, emit_json, usage_error
    from fibreflow.config import load_settings
    from fibreflow.errors import StoreError
    from fibreflow.store import Store
    from fibreflow.store.engines import open_engine
    from fibreflow.store.transfer import TargetNotEmpty, copy_store

    settings = load_settings()
    store_settings = settings.store
    if args.data_path is not None:
        store_settings = store_settings.model_copy(update={"data_path": args.data_path})
    try:
        target = Store(engine=open_engine(args.target, settings=store_settings))
        target.migrate()
    except StoreError as exc:  # a mistyped URL, a server that is down, a catalog that refuses
        return usage_error("store migrate", f"--to: {exc}")
    source = Store()
    try:
        report = copy_store(source, target, replace=args.replace)
    except TargetNotEmpty as exc:
        return usage_error("store migrate", str(exc))
    finally:
        target.close()
    if args.json:
        emit_json(report.to_dict())
    else:
        print(f"{'table':<18} {'source':>10} {'target':>10}   ({report.source} -> {report.target})")
        for table, n in report.source_rows.items():
            m = report.target_rows.get(table)
            print(f"{table:<18} {n:>10} {m if m is not None else '-':>10}" + ("" if n == m else "   differs"))
        print("equal: every table has as many rows on both sides" if report.equal
              else f"NOT equal: {', '.join(report.mismatched())}")
    return EXIT_OK if report.equal else EXIT_FAILED


def _compact(args: argparse.Namespace) -> int:
    from fibreflow.cli import EXIT_OK, emit_json, usage_error
    from fibreflow.store import Store
    from fibreflow.store.lake import compact_store, lake_of

    store = Store()
    if lake_of(store) is None:
        return usage_error("store compact", f"the store is {store.engine.mode} {store.url}; only a DuckLake store "
                           "(store.url ducklake:postgres:...) has data files and snapshots to compact")
    if args.retention is not None and not args.retention >= 0:
        return usage_error("store compact", f"--retention must be 0 or more seconds, got {args.retention:g}")
    report = compact_store(store, retention_s=args.retention)
    if args.json:
        emit_json(report.to_dict())
    else:
        print(f"compacted {store.url}: data files {report.files_before} -> {report.files_after}, snapshots "
              f"{report.snapshots_before} -> {report.snapshots_after}, {report.inlined_rows_flushed} inlined rows "
              f"flushed, {report.files_deleted} old files deleted")
    return EXIT_OK
