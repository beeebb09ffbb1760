"""``fibreflow sla check | watch | compliance``.

Exit codes: ``check`` 0 when every SLA is ok or warn, 1 when any is violated or could not be
read (error), 2 when the SLA file or an option is invalid. ``watch`` 0 when stopped (Ctrl-C,
SIGTERM or ``--cycles``). ``compliance`` 0 when every SLA meets its target, 1 when one misses
it (the ``met`` column says which), 2 on a bad config. Without ``--config``, ``compliance``
reports the SLAs that were checked (the names in the store's ``sla_checks``), with the target
and window of the configured SLA file when it exists.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fibreflow.config import Settings
    from fibreflow.sla.config import SLAConfig
    from fibreflow.sla.monitor import SLAMonitor


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``sla`` command and its subcommands."""
    p = sub.add_parser("sla", help="data-freshness SLAs: check, watch, compliance", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ssub = p.add_subparsers(dest="sla_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", type=Path, default=None,
                       help="SLA definitions file (default: settings sla.config_path)")

    check = ssub.add_parser("check", help="run every check once, store and alert; exit 1 on any failure")
    common(check)
    check.add_argument("--json", action="store_true", help='print {"checks": [...]} as one JSON object')
    check.add_argument("--sla", action="append", dest="names", metavar="NAME",
                       help="only this SLA (repeatable)")
    check.set_defaults(func=_check)

    watch = ssub.add_parser("watch", help="run cycles until stopped, serving GET /health")
    common(watch)
    watch.add_argument("--interval", type=float, default=None, metavar="S",
                       help="seconds between cycles (default: monitoring.check_interval)")
    watch.add_argument("--health-port", type=int, default=None, metavar="PORT",
                       help="serve GET /health on 127.0.0.1:PORT (e.g. 8889; 0 picks one)")
    watch.add_argument("--cycles", type=int, default=None, metavar="N", help="stop after N cycles")
    watch.set_defaults(func=_watch)

    compliance = ssub.add_parser("compliance", help="share of OK checks per SLA over a rolling window")
    common(compliance)
    compliance.add_argument("--days", type=float, default=None,
                            help="window in days (default: monitoring.compliance_window_days, 30)")
    compliance.add_argument("--json", action="store_true", help='print {"slas": [...]} as one JSON object')
    compliance.set_defaults(func=_compliance)


def _load(args: argparse.Namespace) -> tuple[Settings, SLAConfig]:
    from fibreflow.config import load_settings
    from fibreflow.sla.config import load_sla_config

    settings = load_settings()
    return settings, load_sla_config(args.config or settings.sla.config_path, settings=settings)


def _monitor(settings: Settings, config: SLAConfig) -> SLAMonitor:
    from fibreflow.sla.monitor import SLAMonitor
    from fibreflow.store import Store

    store = Store(settings.db_path, lock_timeout_s=settings.store.lock_timeout_s)
    alerts = None
    if config.alerts:
        from fibreflow.sla.alerts import AlertDispatcher

        alerts = AlertDispatcher(store, config.alerts, config.monitoring, settings=settings)
    return SLAMonitor(config, store=store, alerts=alerts, compact_every_s=settings.store.compact_every_s)


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}".rstrip("0").rstrip(".")


def _check(args: argparse.Namespace) -> int:
    from fibreflow.cli import EXIT_FAILED, EXIT_OK, emit_json
    from fibreflow.sla.monitor import FAILING

    settings, config = _load(args)
    results = _monitor(settings, config).check_all_slas(args.names)
    if args.json:
        emit_json({"checks": [r.to_dict() for r in results]})
    else:
        width = max((len(r.name) for r in results), default=4)
        for r in results:
            print(f"{r.name:<{width}}  {r.status:<9}  {_fmt(r.value):>10} / {_fmt(r.threshold):<8}"
                  + (f"  {r.reason}" if r.reason else ""))
    return EXIT_FAILED if any(r.status in FAILING for r in results) else EXIT_OK


def _watch(args: argparse.Namespace) -> int:
    import signal
    import sys
    import threading

    from fibreflow.cli import EXIT_OK, EXIT_USAGE
    from fibreflow.sla.model import MAX_INTERVAL_S

    if args.cycles is not None and args.cycles < 1:
        print("fibreflow: error: --cycles must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    if args.interval is not None and not 0 <= args.interval <= MAX_INTERVAL_S:  # also refuses nan
        print(f"fibreflow: error: --interval must be 0 to {MAX_INTERVAL_S:g} seconds, got {args.interval:g}",
              file=sys.stderr)
        return EXIT_USAGE
    settings, config = _load(args)
    monitor = _monitor(settings, config)
    stop = threading.Event()
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if in_main else None
    interval = config.monitoring.check_interval if args.interval is None else args.interval
    port_note = ""
    if args.health_port is not None:
        host, port = monitor.serve_health(args.health_port).address
        port_note = f", GET http://{host}:{port}/health"
    print(f"watching {len(config.checks)} SLAs every {interval:g}s{port_note}", flush=True)
    try:
        monitor.watch(interval, cycles=args.cycles, stop_event=stop)
    except KeyboardInterrupt:
        pass
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    print(f"stopped after {monitor.cycles} cycles", flush=True)
    return EXIT_OK


def _compliance(args: argparse.Namespace) -> int:
    import math

    from fibreflow.cli import EXIT_FAILED, EXIT_OK, emit_json, usage_error
    from fibreflow.sla.compliance import compute_compliance
    from fibreflow.sla.model import MAX_DAYS
    from fibreflow.store import Store

    if args.days is not None and not 0 < args.days <= MAX_DAYS:  # also refuses nan
        return usage_error("sla compliance", f"--days must be above 0 and at most {MAX_DAYS}, got {args.days:g}")
    settings, monitoring, names = _compliance_scope(args)
    days = monitoring.compliance_window_days if args.days is None else args.days
    target = monitoring.compliance_target
    store = Store(settings.db_path, lock_timeout_s=settings.store.lock_timeout_s)
    frame = compute_compliance(store, days=days, target=target, names=names)
    records = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
               for row in frame.to_dict(orient="records")]
    source = str(args.config) if args.config else "the SLAs checked (store)"
    if args.json:
        emit_json({"days": days, "target": target, "source": source, "slas": records})
    else:
        from fibreflow.reporting.tables import format_budget, format_percent

        print(f"compliance over {days:g} days, target {format_percent(target)}, {source}")
        if not records:
            print("  no SLA checks in this window")
        for r in records:
            print(f"  {r['name']:<32} {format_percent(r['compliance']):>8}  {'met' if r['met'] else 'MISSED':<6}  "
                  f"checks {r['checks']}  error budget {format_budget(r['error_budget_left'])}")
    return EXIT_OK if all(r["met"] for r in records) else EXIT_FAILED


def _compliance_scope(args: argparse.Namespace) -> tuple[Settings, Any, list[str] | None]:
    """Settings, the monitoring block and the SLA names to report: those of ``--config``, or
    (without it) every SLA checked in the window, judged by the configured file's target."""
    from fibreflow.config import load_settings
    from fibreflow.sla.config import load_sla_config
    from fibreflow.sla.model import MonitoringSettings

    if args.config:
        settings, config = _load(args)
        return settings, config.monitoring, list(config.slas)
    settings = load_settings()
    configured = Path(settings.sla.config_path)
    if configured.is_file():
        return settings, load_sla_config(configured, settings=settings).monitoring, None
    return settings, MonitoringSettings(), None
