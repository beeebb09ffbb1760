"""``fibreflow demo``: the main job, offline, against a local demo data layer and a scripted model.

1. SLA monitoring: a local data layer (:mod:`fibreflow.demo.datalayer`), cycles in which the
   Neon->Convex sync stalls and recovers, alerts delivered to a local Slack receiver.
2. An autopilot build of ``data/demo/repo`` (:mod:`fibreflow.demo.build`): three features, six
   attempts each in local sandboxes, the scripted model, failures learned and a second iteration
   that uses them, winners on branches, staging, a smoke check, the approval request.
3. The SLA, cost, learning and build reports rendered into ``reports/``, and the command that
   opens the digital twin.

Everything lands in the configured store, so a second run adds to the history.

Modules: ``datalayer`` (the demo's own SQLite table, image folder and HTTP endpoint) and
``build`` (the autopilot on ``data/demo/repo`` with the scripted model). ``fibreflow.cli.demo``
is the command.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fibreflow.demo.build import DEMO_DATA
from fibreflow.sla.model import CheckResult
from fibreflow.yamlio import environ_overlay

Print = Callable[[str], None]


@dataclass
class DemoSummary:
    """What a demo run did, for tests and the closing lines."""

    cycles: list[list[CheckResult]] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    reports: dict[str, str] = field(default_factory=dict)
    build_state: str | None = None
    build_run_id: str | None = None
    approval_requests: list[str] = field(default_factory=list)


def _print_cycle(label: str, results: list[CheckResult], out: Print) -> None:
    out(f"\n  cycle: {label}")
    for r in results:
        value = "-" if r.value is None else f"{r.value:.3g}"
        out(f"    {r.status:<9} {r.name:<26} value={value:<8} threshold={r.threshold:g}"
            + (f"  ({r.reason})" if r.reason and r.status != "ok" else ""))


def run_sla_demo(*, workdir: Path, store_path: Path | None = None,
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
    return summary


def render_reports(reports: dict[str, dict[str, object]], *, db_path: Path,
                   out: Print = print) -> dict[str, str]:
    """Run each report with its parameters against the store at ``db_path``; name -> HTML path."""
    from fibreflow.reporting.runner import run_report

    done = {}
    for name, parameters in reports.items():
        result = run_report(name, parameters={**parameters, "db_path": str(db_path)})
        done[name] = str(result.html_path)
        out(f"   {name} report: {result.html_path}")
    return done


def run_demo(*, workdir: Path, store_path: Path, attempts: int = 6, report: bool = True,
             out: Print = print) -> DemoSummary:
    """The whole demo: SLA cycles, the autopilot build, the reports."""
    from fibreflow.config import load_settings
    from fibreflow.demo.build import run_build_demo
    from fibreflow.store import Store
    from fibreflow.testing.slack_receiver import SlackReceiver

    summary = run_sla_demo(workdir=workdir, store_path=store_path, out=out)
    store = Store(store_path)
    with SlackReceiver() as slack:
        result = run_build_demo(workdir=workdir, store=store, settings=load_settings(), attempts=attempts,
                                webhook_url=slack.webhook_url, out=out)
        summary.approval_requests = [m.text or "" for m in slack.messages]
    summary.build_state, summary.build_run_id = result.state, result.run_id
    out("\n".join("   " + line for line in str(result).splitlines()))
    out(f"   approval request received by the local Slack receiver: {len(summary.approval_requests)} message(s)")
    if report:
        out("\n== Reports")
        summary.reports = render_reports({
            "sla": {"days": 1, "config_path": str(DEMO_DATA / "slas.demo.yaml")},
            "cost": {"days": 30}, "learning": {"days": 30}, "build": {"run_id": result.run_id},
        }, db_path=store.path, out=out)
    return summary
