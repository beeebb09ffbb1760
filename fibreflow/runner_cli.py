"""``fibreflow build``: run a feature list (or one goal) as parallel sandboxed agent attempts."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fibreflow.cli import EXIT_FAILED, EXIT_OK, usage_error


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build", help="build features with parallel agent attempts in sandboxes",
        description="Run every feature of FEATURES_OR_GOAL (a feature_list.json, or a goal text) as "
                    "N agent attempts, each in its own sandbox, features in dependency order. "
                    "Nothing is written to the repository: results and diffs go to the store. "
                    "Exit 0 when every feature has a passing attempt, 1 otherwise.")
    p.add_argument("spec", metavar="FEATURES_OR_GOAL", nargs="?",
                   help="feature_list.json (or .yaml), or a goal text")
    p.add_argument("--repo", default=".", help="the repository the sandboxes copy (default: .)")
    p.add_argument("--attempts", type=int, default=None, metavar="N",
                   help="attempts per feature (default 1; with --autopilot: autopilot.attempts, 15)")
    p.add_argument("--workers", type=int, default=None, metavar="W",
                   help="attempts at once (default: local 2x cores and at least N; e2b: the plan's concurrency)")
    p.add_argument("--backend", choices=("local", "e2b"), default=None,
                   help="sandbox backend (default: sandbox.backend in the settings, local)")
    p.add_argument("--profile", default=None, help="sandbox profile (default: sandbox.profile, python-tests)")
    p.add_argument("--agent", default=None, help="agent name (default: command; with --autopilot: claude)")
    p.add_argument("--agent-command", default=None, metavar="CMD",
                   help="for --agent command: the shell command run in each sandbox "
                        "(the task is in $FIBREFLOW_TASK and .fibreflow/task.md)")
    p.add_argument("--agent-timeout", type=float, default=None, metavar="S",
                   help="seconds an agent may run (default: the profile's wall timeout)")
    p.add_argument("--test-command", default=None, metavar="CMD",
                   help="test command for a goal, or for features that name none (default: python -m pytest -q)")
    p.add_argument("--escalate", nargs="?", const="opus", default=None, metavar="CEILING",
                   help="start each feature at its routed (or pinned) tier and move one tier up while no attempt "
                        "passes, up to CEILING (default opus); with --autopilot: autopilot.escalate_to")
    p.add_argument("--run-id", default=None, help="run id (default: generated)")
    p.add_argument("--use-sandboxes", action="store_true", default=True,
                   help="run every attempt in its own sandbox (the default and only mode)")
    p.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    from fibreflow.autopilot_cli import add_build_arguments

    add_build_arguments(p)
    p.set_defaults(func=build)


def _usage(message: str) -> int:
    return usage_error("build", message)


def build(args: argparse.Namespace) -> int:
    """Handler of ``fibreflow build``."""
    from fibreflow.agents import get_agent
    from fibreflow.cli import emit_json
    from fibreflow.config import load_settings
    from fibreflow.errors import AgentError, ConfigError, RunnerError, SandboxUnavailable
    from fibreflow.features import load_features
    from fibreflow.runner import ParallelRunner
    from fibreflow.runner_progress import TerminalProgress
    from fibreflow.sandbox.profiles import load_profile
    from fibreflow.store import open_store

    if args.autopilot or args.resume:
        from fibreflow.autopilot_cli import build_autopilot

        return build_autopilot(args)
    if args.spec is None:
        return _usage("give FEATURES_OR_GOAL (a feature_list.json or a goal text)")
    args.attempts = 1 if args.attempts is None else args.attempts
    args.agent = args.agent or "command"
    if args.attempts < 1:
        return _usage(f"--attempts must be at least 1, got {args.attempts}")
    if args.workers is not None and args.workers < 1:
        return _usage(f"--workers must be at least 1, got {args.workers}")
    settings = load_settings()
    backend = args.backend or settings.sandbox.backend
    profile = args.profile or settings.sandbox.profile
    load_profile(profile)  # an unknown profile is a usage error before anything starts
    try:
        features = load_features(args.spec, test_command=args.test_command)
    except RunnerError as exc:
        return _usage(str(exc))

    def make_agent(name: str) -> Any:
        if name == "command":
            if not args.agent_command:
                raise AgentError("--agent command needs --agent-command CMD")
            return get_agent(name, command=args.agent_command, timeout=args.agent_timeout)
        return get_agent(name)

    try:
        ladder = None
        if args.escalate:
            from fibreflow.escalation import TierLadder

            ladder = TierLadder(args.escalate)
            features = ladder.start(features)
        agent = make_agent(args.agent)
        runner = ParallelRunner(open_store(settings.db_path), args.repo, agent=agent, backend=backend,
                                profile=profile, attempts=args.attempts, workers=args.workers,
                                run_id=args.run_id, agent_factory=make_agent, escalate=ladder,
                                progress=None if args.no_progress else TerminalProgress(sys.stderr))
        result = runner.run(features)
    except (AgentError, ConfigError, RunnerError, SandboxUnavailable) as exc:
        return _usage(str(exc))
    if args.json:
        emit_json(result.to_dict())
    else:
        print(summary_table(result))
    return EXIT_OK if result.ok else EXIT_FAILED


def summary_table(result: Any) -> str:
    """The run as a plain-text table, one feature per line."""
    rows = [("feature", "status", "passed", "cost", "reason")]
    for f in result.features:
        d = f.to_dict()
        rows.append((d["feature_id"], d["status"], f"{d['passed']}/{d['attempts']}", f"${d['cost_usd']:.4f}",
                     d["reason"] or ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + ("  " + r[4] if r[4] else "")
             for r in rows]
    lines.append(f"run {result.run_id}: {result.status} ({len(result.features)} features, "
                 f"{sum(len(f.attempts) for f in result.features)} attempts, {result.duration_s:.1f}s, "
                 f"backend {result.backend}, {result.workers} workers)")
    return "\n".join(lines)
