"""``fibreflow demo``: the main job, offline, against a local demo data layer.

The SLA part builds a local data layer (:mod:`fibreflow.demo.datalayer`), runs SLA cycles in
which the Neon->Convex sync stalls and recovers, delivers the alerts to a local Slack receiver
and renders the SLA report. Everything lands in the configured store, so a second run adds
to the history.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fibreflow.sla.model import CheckResult
from fibreflow.yamlio import environ_overlay

DEMO_DATA = Path(__file__).resolve().parents[2] / "data" / "demo"
Print = Callable[[str], None]


@dataclass
class DemoSummary:
    """What a demo run did, for tests and the closing lines."""

    cycles: list[list[CheckResult]] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    reports: dict[str, str] = field(default_factory=dict)


def _print_cycle(label: str, results: list[CheckResult], out: Print) -> None:
    out(f"\n  cycle: {label}")
    for r in results:
        value = "-" if r.value is None else f"{r.value:.3g}"
        out(f"    {r.status:<9} {r.name:<26} value={value:<8} threshold={r.threshold:g}"
            + (f"  ({r.reason})" if r.reason and r.status != "ok" else ""))


def run_sla_demo(*, workdir: Path, store_path: Path | None = None, report: bool = True,
                 out: Print = print) -> DemoSummary:
    """SLA cycles against the local data layer: healthy, the sync stalls, it recovers."""
    from fibreflow.config import load_settings
    from fibreflow.demo.datalayer import DemoDataLayer
    from fibreflow.sla.alerts import AlertDispatcher
    from fibreflow.sla.config import load_sla_config
    from fibreflow.sla.monitor import SLAMonitor
    from fibreflow.store import Store
    from fibreflow.testing.slack_receiver import SlackReceiver

    settings = load_settings()
    store = Store(store_path or settings.db_path)
    store.migrate()
    config_path = DEMO_DATA / "slas.demo.yaml"
    config = load_sla_config(config_path, settings=settings)
    summary = DemoSummary()
    out("== SLA monitoring (LOCAL DEMO DATA LAYER: a SQLite table, an image folder and an HTTP")
    out("   endpoint on 127.0.0.1 stand in for Neon, Convex and the VLM store; nothing real is checked)")
    with DemoDataLayer(workdir / "datalayer") as layer, SlackReceiver() as slack, \
            environ_overlay(layer.environment()):
        out(f"   data layer: {layer.root}  http: {layer.url}  alerts -> local Slack receiver {slack.url}")
        dispatcher = AlertDispatcher(store, config.alerts, config.monitoring, settings,
                                     environ={"SLACK_WEBHOOK_URL": slack.webhook_url})
        monitor = SLAMonitor(config, store=store, alerts=dispatcher)
        steps: list[tuple[str, Callable[[], None]]] = [
            ("healthy pipeline", lambda: layer.sync()),
            ("Neon->Convex sync stalls for 15 minutes", lambda: layer.stall(minutes=15)),
            ("sync recovers", lambda: layer.sync()),
        ]
        for label, step in steps:
            step()
            results = monitor.check_all_slas()
            summary.cycles.append(results)
            _print_cycle(label, results, out)
            # check_all_slas delivers the outbox before it returns, so the receiver has them now
            for message in slack.messages[len(summary.alerts):]:
                summary.alerts.append(message.text or "")
                out(f"    alert received by the local Slack receiver: {message.text}")
    if report:
        from fibreflow.reports import run_report

        result = run_report("sla", parameters={"days": 1, "db_path": str(store.path),
                                               "config_path": str(config_path)})
        summary.reports["sla"] = str(result.html_path)
        out(f"\n   SLA report: {result.html_path}")
    return summary


def run(args: argparse.Namespace) -> int:
    from fibreflow.config import load_settings

    settings = load_settings()
    workdir = Path(args.workdir or settings.state_dir / "demo")
    summary = run_sla_demo(workdir=workdir, report=not args.no_report)
    violated = any(r.status == "violation" for c in summary.cycles for r in c)
    recovered = bool(summary.cycles) and all(r.status == "ok" for r in summary.cycles[-1])
    print(f"\n== demo done: {len(summary.cycles)} SLA cycles, violation seen: {violated}, "
          f"recovered: {recovered}, alerts delivered: {len(summary.alerts)}; store: {settings.db_path}")
    return 0 if violated and recovered else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the offline demo (local data layer, scripted model)")
    p.add_argument("--workdir", type=Path, default=None, help="where the demo data layer lives")
    p.add_argument("--no-report", action="store_true", help="skip rendering the reports")
    p.set_defaults(func=run)
