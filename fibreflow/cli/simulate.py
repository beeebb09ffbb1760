"""``fibreflow simulate add-agents TYPE COUNT | routing [--mix NAME=70/25/5 ...] | capacity --growth 0.2``.

What-if projections calibrated on the store's recorded history (``fibreflow.simulation.engine``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="what-if projections from the recorded history", description=__doc__)
    ssub = p.add_subparsers(dest="simulate_command", metavar="COMMAND")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--days", type=float, default=None,
                        help="days of history to calibrate on (default: simulation.calibration_days)")
        sp.add_argument("--db", type=Path, default=None, help="the store (default: the configured one)")
        sp.add_argument("--json", action="store_true", help="print one JSON object")

    a = ssub.add_parser("add-agents", help="cost, SLA impact and limits of more agents of a recorded type")
    a.add_argument("agent_type", metavar="TYPE", help="an agent name found in the history (e.g. coder)")
    a.add_argument("count", metavar="COUNT", type=int, help="how many more agents of that type")
    common(a)
    a.set_defaults(func=_add_agents)
    r = ssub.add_parser("routing", help="cost and quality risk of model routing mixes, cheapest first")
    r.add_argument("--mix", action="append", default=[], metavar="NAME=H/S/O",
                   help="a haiku/sonnet/opus split in percent, e.g. cheap=80/18/2 (repeatable; "
                        "default: 70/25/5, 80/18/2 and 60/35/5)")
    common(r)
    r.set_defaults(func=_routing)
    c = ssub.add_parser("capacity", help="the month each limit is reached at a monthly growth rate")
    c.add_argument("--growth", type=float, required=True, help="growth per month as a fraction (0.2 = 20%%)")
    c.add_argument("--months", type=int, default=12, help="horizon in months (default 12)")
    common(c)
    c.set_defaults(func=_capacity)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _calibrate(args: argparse.Namespace) -> Any:
    from fibreflow.config import load_settings
    from fibreflow.errors import ConfigError
    from fibreflow.simulation.engine import Calibration
    from fibreflow.store import Store

    if args.days is not None and args.days <= 0:
        raise ConfigError(f"--days must be positive, got {args.days:g}", key="--days")
    settings = load_settings()
    path = args.db or settings.db_path
    if not Path(path).exists():
        raise ConfigError(f"no store at {path}: run a build or `fibreflow demo` first, or pass --db", key="--db")
    store = Store(path, lock_timeout_s=settings.store.lock_timeout_s)
    return Calibration.from_store(store, days=args.days, settings=settings)


def _emit(args: argparse.Namespace, cal: Any, results: list[Any], key: str | None = None) -> int:
    from fibreflow.cli import emit_json

    if args.json:
        body = {"scenarios": [r.to_dict() for r in results]} if key else results[0].to_dict()
        summary = cal.summary()
        emit_json({**body, "calibration": {"span_days": round(cal.span_days, 3), "calls": cal.calls,
                                           "monthly_cost": round(cal.monthly_cost, 4),
                                           "monthly_cost_range": summary["monthly_cost_range"],
                                           "warning": summary["warning"]}})
        return 0
    from fibreflow.reporting.tables import format_dollars

    warning = cal.warning()
    now_range = cal.value_range(cal.monthly_cost)
    now = (f"{format_dollars(now_range[0])} to {format_dollars(now_range[1])}" if now_range
           else format_dollars(cal.monthly_cost))
    print(f"calibrated on {cal.span_days:.1f} days: {cal.calls} model calls, {now} per month now")
    if warning:
        print(f"WARNING: {warning}")
    for r in results:
        print(f"\n{r.scenario_name}\n  projected cost:   {r.cost_text()} per month"
              f"\n  SLA impact:       {r.projected_sla_impact:+.2f} points")
        if "quality_risk" in r.details:
            print(f"  quality risk:     {r.details['quality_risk']:.1%} expected attempt failures")
        for title, items in (("bottlenecks", r.bottlenecks), ("recommendations", r.recommendations)):
            print(f"  {title}:" + ("" if items else " none"))
            for item in items:
                print(f"    - {item}")
    return 0


def _add_agents(args: argparse.Namespace) -> int:
    from fibreflow.simulation.engine import simulate_add_agents

    cal = _calibrate(args)
    return _emit(args, cal, [simulate_add_agents(args.agent_type, args.count, calibration=cal)])


def _routing(args: argparse.Namespace) -> int:
    from fibreflow.simulation.engine import optimize_model_routing, parse_mix

    mixes = dict(parse_mix(text) for text in args.mix) or None
    cal = _calibrate(args)
    return _emit(args, cal, optimize_model_routing(mixes, calibration=cal), key="scenarios")


def _capacity(args: argparse.Namespace) -> int:
    from fibreflow.simulation.engine import plan_capacity

    cal = _calibrate(args)
    return _emit(args, cal, [plan_capacity(args.growth, months=args.months, calibration=cal)])
