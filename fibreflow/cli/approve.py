"""``fibreflow approve RUN_ID`` and ``fibreflow reject RUN_ID --reason ...``: the human decision on an
autopilot run awaiting approval. ``approve`` exits 0 once deployed (or approved without a production
command), 1 when the gate blocked or the deploy failed. ``reject`` needs ``--reason``.
"""

from __future__ import annotations

import argparse

from fibreflow.cli import progress_echo, show_result


def register(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("approve", help="deploy an autopilot run awaiting approval to production",
                       description="Run the SLA gate and autopilot.production_command for RUN_ID. Exit 0 when "
                                   "deployed, 1 when the gate blocked it or the deploy failed (approve again later).")
    a.add_argument("run_id", metavar="RUN_ID")
    a.add_argument("--by", default=None, help="who approves (default: the current user)")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(func=approve)
    r = sub.add_parser("reject", help="reject an autopilot run, recording why",
                       description="Record the reason and close RUN_ID; its branch stays for inspection.")
    r.add_argument("run_id", metavar="RUN_ID")
    r.add_argument("--reason", required=True, help="why the run is rejected (stored with it)")
    r.add_argument("--by", default=None, help="who rejects (default: the current user)")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.set_defaults(func=reject)


def approve(args: argparse.Namespace) -> int:
    """Handler of ``fibreflow approve``."""
    from fibreflow.autopilot import approve_run

    result = approve_run(args.run_id, by=args.by, echo=progress_echo(args))
    return show_result(result, args, ok=result.ok)


def reject(args: argparse.Namespace) -> int:
    """Handler of ``fibreflow reject``."""
    from fibreflow.autopilot import reject_run

    result = reject_run(args.run_id, reason=args.reason, by=args.by)
    return show_result(result, args, ok=True)
