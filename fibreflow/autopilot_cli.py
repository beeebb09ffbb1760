"""The autopilot on the command line: ``build --autopilot``, ``build --resume``, ``approve``, ``reject``.

``fibreflow build --autopilot "GOAL"`` (or a feature_list.json) runs the pipeline up to the
approval request and exits 0 while the run awaits approval, 1 when a step failed (no attempt
passed, coverage below the floor, SLA gate, staging or smoke failure; resume with ``--resume``),
2 on a usage or configuration error. ``approve`` exits 0 once deployed (or approved without a
production command), 1 when the gate blocked or the deploy failed. ``reject`` needs ``--reason``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fibreflow.cli import EXIT_FAILED, EXIT_OK, usage_error


def add_build_arguments(p: argparse.ArgumentParser) -> None:
    """The autopilot's options of ``fibreflow build`` (registered by ``runner_cli``)."""
    g = p.add_argument_group("autopilot", "with --autopilot: build, select, branch, stage, smoke, ask for approval")
    g.add_argument("--autopilot", action="store_true",
                   help="run the autopilot on FEATURES_OR_GOAL: winners go to a new branch fibreflow/<run>/<feature>, "
                        "staging and smoke checks run, then it waits for `fibreflow approve RUN_ID`")
    g.add_argument("--resume", metavar="RUN_ID", default=None,
                   help="continue an autopilot run from its first step that did not complete")
    g.add_argument("--features", metavar="FILE", default=None,
                   help="with --autopilot and a goal text: use this feature list instead of decomposing the goal")
    if "--offline" not in p._option_string_actions:
        g.add_argument("--offline", action="store_true",
                       help="use the scripted model (no API key, no real model) for the claude agent and the "
                            "decomposition")
    g.add_argument("--agent-script", metavar="NAME|FILE", default=None,
                   help="with --offline: the scripted conversation of the claude agent (e.g. demo_feature)")
    g.add_argument("--decompose-script", metavar="FILE", default=None,
                   help="with --offline: the scripted reply to the decomposition call")
    g.add_argument("--coverage-floor", type=float, default=None, metavar="F",
                   help="least coverage (0..1) a winner needs (default: selection.coverage_floor)")


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


def _echo(args: argparse.Namespace) -> Any:
    if getattr(args, "json", False) or getattr(args, "no_progress", False):
        return None
    return lambda line: print(f"autopilot: {line}", file=sys.stderr, flush=True)


def _show(result: Any, args: argparse.Namespace, *, ok: bool) -> int:
    from fibreflow.cli import emit_json

    if args.json:
        emit_json(result.to_dict())
    else:
        print(result)
    return EXIT_OK if ok else EXIT_FAILED


def build_autopilot(args: argparse.Namespace) -> int:
    """``fibreflow build --autopilot`` and ``fibreflow build --resume RUN_ID``."""
    if getattr(args, "escalate", None):
        return _usage("--escalate is for plain builds; the autopilot's ceiling is autopilot.escalate_to in the config")
    from fibreflow.autopilot import resume_autopilot, run_autopilot
    from fibreflow.errors import AgentError, RunnerError, SandboxUnavailable
    from fibreflow.runner_progress import TerminalProgress

    progress = None if args.no_progress or args.json else TerminalProgress(sys.stderr)
    try:
        if args.resume:
            if args.spec:
                return _usage("--resume takes no FEATURES_OR_GOAL: the run remembers its own")
            result = resume_autopilot(args.resume, progress=progress, echo=_echo(args))
        else:
            if not args.spec:
                return _usage("--autopilot needs FEATURES_OR_GOAL (a goal text or a feature_list.json)")
            spec_file = Path(args.spec)
            is_file = spec_file.is_file() and not args.features
            result = run_autopilot(
                None if is_file else args.spec, repo=args.repo, features=args.spec if is_file else args.features,
                attempts=args.attempts, workers=args.workers, agent=args.agent or "claude",
                agent_command=args.agent_command, agent_timeout=args.agent_timeout,
                agent_script=args.agent_script, offline=bool(getattr(args, "offline", False)),
                decompose_script=args.decompose_script, backend=args.backend, profile=args.profile,
                test_command=args.test_command, coverage_floor=args.coverage_floor, run_id=args.run_id,
                progress=progress, echo=_echo(args))
    except (AgentError, RunnerError, SandboxUnavailable) as exc:
        return _usage(str(exc))
    return _show(result, args, ok=result.ok)


def approve(args: argparse.Namespace) -> int:
    """Handler of ``fibreflow approve``."""
    from fibreflow.autopilot import approve_run

    result = approve_run(args.run_id, by=args.by, echo=_echo(args))
    return _show(result, args, ok=result.ok)


def reject(args: argparse.Namespace) -> int:
    """Handler of ``fibreflow reject``."""
    from fibreflow.autopilot import reject_run

    result = reject_run(args.run_id, reason=args.reason, by=args.by)
    return _show(result, args, ok=True)


def _usage(message: str) -> int:
    return usage_error("build", message)


__all__ = ["add_build_arguments", "approve", "build_autopilot", "register", "reject"]
