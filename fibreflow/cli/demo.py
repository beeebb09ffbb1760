"""``fibreflow demo``: the main job, offline (see :mod:`fibreflow.demo`)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from fibreflow.demo import run_demo

if TYPE_CHECKING:
    from fibreflow.config import Settings


def run(args: argparse.Namespace) -> int:
    from fibreflow.config import load_settings

    settings = load_settings()
    workdir = Path(args.workdir or settings.state_dir / "demo")
    summary = run_demo(workdir=workdir, store_path=settings.db_path, attempts=args.attempts,
                       report=not args.no_report)
    violated = any(r.status == "violation" for c in summary.cycles for r in c)
    recovered = bool(summary.cycles) and all(r.status == "ok" for r in summary.cycles[-1])
    built = summary.build_state == "awaiting_approval"
    print(f"\n== demo done: {len(summary.cycles)} SLA cycles (violation seen: {violated}, recovered: "
          f"{recovered}, alerts delivered: {len(summary.alerts)}); build {summary.build_run_id}: "
          f"{summary.build_state}; store: {settings.db_path}")
    # approving runs autopilot.production_command: without one, `approve` says so and exits 2
    first = "" if settings.autopilot.production_command else "set autopilot.production_command, then "
    print(f"   approve the build:  {first}{db_prefix(settings)}.venv/bin/fibreflow approve {summary.build_run_id}")
    print(f"   open the twin:      {db_prefix(settings)}.venv/bin/fibreflow twin    (then http://127.0.0.1:8866)")
    return 0 if violated and recovered and built else 1


def db_prefix(settings: Settings) -> str:
    """``FIBREFLOW_DB=... `` when the store is not the default one, so a printed command finds it."""
    return "" if settings.db_path == Path("data/fibreflow.duckdb") else f"FIBREFLOW_DB={settings.db_path} "


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the offline demo (local data layer, scripted model)")
    p.add_argument("--workdir", type=Path, default=None, help="where the demo data layer lives")
    p.add_argument("--no-report", action="store_true", help="skip rendering the reports")
    p.add_argument("--attempts", type=int, default=6, help="attempts per feature of the demo build (default 6)")
    p.set_defaults(func=run)
