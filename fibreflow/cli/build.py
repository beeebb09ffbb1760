"""``fibreflow build``: run a feature list (or one goal) as parallel sandboxed agent attempts.

A plain build runs every feature as N attempts and stores the results; before anything starts, the
preflight (``fibreflow.build.preflight``) checks the keys and model IDs the run needs, and
``--model``, the features' agents and ``needs_data`` SLAs are validated (exit 2 naming the
option, or the file, line and field). The data gate (``--data-policy``) and the budget guard
(``budget:``) are made here from ``fibreflow.sla`` and handed to the runner. With ``--autopilot``
(or ``--resume RUN_ID``) the autopilot takes over: build, select, branch, stage, smoke, then ask
for approval; it exits 0 while the run awaits approval, 1 when a step failed (no attempt passed,
coverage below the floor, SLA gate, staging or smoke failure; resume with ``--resume``), 2 on a
usage or configuration error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fibreflow.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, progress_echo, show_result, usage_error


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "build", help="build features with parallel agent attempts in sandboxes",
        description="Run every feature of FEATURES_OR_GOAL (a feature_list.json, or a goal text) as "
                    "N agent attempts, each in its own sandbox, features in dependency order. "
                    "Nothing is written to the repository: results and diffs go to the store. "
                    "A feature's attempts start from the winning code of the features it depends on. "
                    "Exit 0 when every feature has a passing attempt, 1 otherwise, 2 on a usage error, a failed "
                    "preflight (key, model IDs, E2B, Slack) or when every attempt ended on an infrastructure error.")
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
                   help="seconds an agent may run: the command agent's command, or the claude agent's whole "
                        "attempt, model calls and their retries included (default: the profile's wall timeout "
                        "for the command agent, none for the claude agent)")
    p.add_argument("--test-command", default=None, metavar="CMD",
                   help="test command for a goal, or for features that name none (default: python -m pytest -q)")
    p.add_argument("--model", default=None, metavar="TIER|MODEL_ID",
                   help="run every attempt on this tier (haiku, sonnet, opus) or model ID (one of the pricing file), "
                        "whatever the routing says; recorded with tier reason 'override' (also with --autopilot)")
    p.add_argument("--data-policy", choices=("warn", "abort", "ask"), default="ask",
                   help="when a feature's needs_data SLAs are not met: warn (record, go ahead), abort (block the "
                        "feature) or ask (Proceed? (y/n) on a terminal; abort where none is attached). Default: ask")
    p.add_argument("--escalate", nargs="?", const="opus", default=None, metavar="CEILING",
                   help="start each feature at its routed (or pinned) tier and move one tier up while no attempt "
                        "passes, up to CEILING (default opus); with --autopilot: autopilot.escalate_to")
    p.add_argument("--run-id", default=None, help="run id (default: generated)")
    p.add_argument("--no-progress", action="store_true", help="no progress output on stderr")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_autopilot_arguments(p)
    p.set_defaults(func=build)


def _add_autopilot_arguments(p: argparse.ArgumentParser) -> None:
    """The autopilot's options of ``fibreflow build``."""
    g = p.add_argument_group("autopilot", "with --autopilot: build, select, branch, stage, smoke, ask for approval")
    g.add_argument("--autopilot", action="store_true",
                   help="run the autopilot on FEATURES_OR_GOAL: winners go to a new branch fibreflow/<run>/<feature>, "
                        "staging and smoke checks run, then it waits for `fibreflow approve RUN_ID`")
    g.add_argument("--resume", metavar="RUN_ID", default=None,
                   help="continue an autopilot run from its first step that did not complete")
    g.add_argument("--features", metavar="FILE", default=None,
                   help="with --autopilot and a goal text: use this feature list instead of decomposing the goal")
    g.add_argument("--offline", action="store_true",
                   help="no network to any model API: every model call (the claude agent's, the decomposition's) "
                        "goes to the local scripted model, whatever the API key and models.base_url; also a plain "
                        "build's (setting: models.offline)")
    g.add_argument("--agent-script", metavar="NAME|FILE", default=None,
                   help="with --offline: the scripted conversation of the claude agent (e.g. demo_feature); "
                        "also a plain build's")
    g.add_argument("--decompose-script", metavar="FILE", default=None,
                   help="with --offline: the scripted reply to the decomposition call")
    g.add_argument("--coverage-floor", type=float, default=None, metavar="F",
                   help="least coverage (0..1) a winner needs (default: selection.coverage_floor)")
    g.add_argument("--no-deploy", action="store_true",
                   help="end the run at the committed branches (after the whole test suite): no staging, smoke "
                        "checks or approval request, so autopilot.staging_command and smoke_checks are not needed")


def _usage(message: str) -> int:
    return usage_error("build", message)


def build(args: argparse.Namespace) -> int:
    """Handler of ``fibreflow build``."""
    from fibreflow.agents import get_agent
    from fibreflow.build.features import load_features
    from fibreflow.build.progress import TerminalProgress
    from fibreflow.build.runner import ParallelRunner
    from fibreflow.cli import emit_json
    from fibreflow.config import load_settings
    from fibreflow.errors import AgentError, ConfigError, RunnerError, SandboxUnavailable
    from fibreflow.sandbox.profiles import load_profile
    from fibreflow.store import open_store

    if args.autopilot or args.resume:
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
    if args.model and args.escalate:
        return _usage("give --model or --escalate, not both: --model fixes the tier, --escalate climbs tiers")
    router, override = routing(args, settings, features)

    if args.agent_timeout is not None and not args.agent_timeout > 0:
        return _usage(f"--agent-timeout must be positive, got {args.agent_timeout}")
    offline = bool(args.offline) or settings.models.offline  # offline: no network to any model API
    if args.agent_script and not offline:
        return _usage("--agent-script is the scripted model's conversation: it needs --offline (or models.offline)")
    uses_model = args.agent == "claude" or any(f.agent == "claude" for f in features)
    run_preflight(settings, models=uses_model, offline=offline, backend=backend, override=override)
    sla_config = data_sla_config(settings, features)
    store = open_store(settings.db_path)
    made: list[Any] = []  # agents holding a model client (and maybe a scripted server), closed at the end

    def make_agent(name: str) -> Any:
        if name == "command":
            if not args.agent_command:
                raise AgentError("--agent command needs --agent-command CMD")
            return get_agent(name, command=args.agent_command, timeout=args.agent_timeout)
        if name == "claude":
            extra = {"script": args.agent_script} if args.agent_script else {}
            made.append(get_agent(name, offline=offline, timeout_s=args.agent_timeout, store=store, **extra))
            return made[-1]
        return get_agent(name)

    runner: Any = None
    try:
        ladder = None
        if args.escalate:
            from fibreflow.build.escalation import TierLadder

            ladder = TierLadder(args.escalate, router=router)
        agent = make_agent(args.agent)
        runner = ParallelRunner(store, args.repo, agent=agent, backend=backend,
                                profile=profile, attempts=args.attempts, workers=args.workers,
                                run_id=args.run_id, agent_factory=make_agent, escalate=ladder,
                                progress=None if args.no_progress else TerminalProgress(sys.stderr),
                                router=router, override=override,
                                data_gate=data_gate(sla_config, store, args.data_policy),
                                budget=budget_guard(settings, store))
        result = runner.run(features)
        if runner.budget is not None:
            runner.budget.check_alerts()  # the spend of this run's last attempts
    except (AgentError, ConfigError, RunnerError, SandboxUnavailable) as exc:
        return _usage(str(exc))
    except KeyboardInterrupt:  # SIGINT or SIGTERM: the runner stopped; say what it kept, main exits 130/143
        if runner is not None and runner.result is not None:
            report_stopped(runner, as_json=args.json)
        raise
    finally:
        for made_agent in made:
            made_agent.close()
    if args.json:
        emit_json(result.to_dict())
    else:
        print(summary_table(result))
    if result.only_infrastructure_errors:  # nothing was judged: a key, model or network problem, not the code
        first = result.attempts[0]
        print(f"fibreflow build: every attempt ended on an infrastructure error ({first.error_kind}), no test ran: "
              f"{first.error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK if result.ok else EXIT_FAILED


def run_preflight(settings: Any, *, models: bool, offline: bool, backend: str, override: Any) -> None:
    """The preflight (``build.preflight``): a refused key, a missing model ID, an unset E2B key or a
    refused Slack token is a ConfigError (exit 2) before anything starts."""
    from fibreflow.build.preflight import preflight, require

    extra = [override.model_id] if override is not None else []
    require(preflight(settings, models=models, offline=offline, backend=backend, extra_models=extra))


def data_sla_config(settings: Any, features: Any) -> Any:
    """The SLA definitions the features' ``needs_data`` name (None when none declares any); an
    unknown SLA name is a ConfigError naming the feature list's file, line and field."""
    from fibreflow.sla.feature_gate import check_needs_data, needed

    if not needed(features):
        return None
    from fibreflow.models.pricing import resolve_path
    from fibreflow.sla.config import load_sla_config

    path = resolve_path(settings.sla.config_path)
    config = load_sla_config(path, settings=settings) if path.is_file() else None
    check_needs_data(features, config, config_path=str(path))
    return config


def budget_guard(settings: Any, store: Any) -> Any:
    """The runner's ``BudgetGuard`` with its alerts on the SLA alert path (None without limits)."""
    if settings.budget.daily_usd is None and settings.budget.monthly_usd is None:
        return None
    from fibreflow.build.budget import Budget
    from fibreflow.sla.budget_alerts import budget_alerter

    return Budget(store, settings.budget, alert=budget_alerter(store, settings))


def data_gate(config: Any, store: Any, policy: Any) -> Any:
    """The runner's ``DataGate`` over ``config`` (None without SLAs to check)."""
    if config is None:
        return None
    from fibreflow.sla.feature_gate import FreshDataGate

    return FreshDataGate(config, store=store, policy=policy)


def routing(args: argparse.Namespace, settings: Any, features: Any) -> tuple[Any, Any]:
    """The router of a build and its ``--model`` override (None without one); a feature whose
    ``agent`` has no rule, or a ``--model`` that is neither a tier nor a priced model ID, is a
    ConfigError naming the file, line and field, or the option."""
    from fibreflow.build.tiers import check_agents
    from fibreflow.models.pricing import Pricing
    from fibreflow.models.routing import ModelRouter

    router = ModelRouter(settings)
    check_agents(features, router.agent_rules)
    model = getattr(args, "model", None)
    override = router.resolve_override(model, pricing=Pricing.load(settings.models.pricing_path)) if model else None
    return router, override


def report_stopped(runner: Any, *, as_json: bool) -> None:
    """What a stopped build kept: the partial run on stdout (one JSON object with ``--json``), and on
    stderr which attempts finished and are stored, and how many were cut short."""
    from fibreflow.cli import emit_json

    result = runner.result
    cut = {a.attempt_id for a in runner.stopped_attempts}
    kept = [a for f in result.features for a in f.attempts if a.attempt_id not in cut]
    if as_json:
        emit_json(result.to_dict())
    else:
        print(summary_table(result), flush=True)
    listed = ", ".join(f"{a.attempt_id} ({a.status})" for a in kept[:20]) + (" ..." if len(kept) > 20 else "")
    print(f"fibreflow build: run {result.run_id} {result.status}; kept in the store: {len(kept)} finished "
          f"attempt(s)" + (f": {listed}" if kept else "") + f"; {len(cut)} running attempt(s) stopped, stored "
          f"as cancelled; unfinished features marked {result.status}", file=sys.stderr, flush=True)


def summary_table(result: Any) -> str:
    """The run as a plain-text table, one feature per line."""
    rows = [("feature", "status", "passed", "failed", "errors", "tier", "cost", "reason")]
    for f in result.features:
        d = f.to_dict()
        rows.append((d["feature_id"], d["status"], f"{d['passed']}/{d['attempts']}", str(d["failed"]),
                     str(d["errors"]), ",".join(d["tiers"]) or "-", f"${d['cost_usd']:.4f}", d["reason"] or ""))
    n = len(rows[0]) - 1
    widths = [max(len(r[i]) for r in rows) for i in range(n)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:n], widths, strict=True)) + ("  " + r[n] if r[n] else "")
             for r in rows]
    counts = result.to_dict()["attempt_counts"]
    lines.append(f"run {result.run_id}: {result.status} ({len(result.features)} features, "
                 f"{sum(len(f.attempts) for f in result.features)} attempts: {counts['passed']} passed, "
                 f"{counts['failed']} failed their tests, {counts['errors']} ended on errors; {result.duration_s:.1f}s, "
                 f"backend {result.backend}, {result.workers} workers)")
    if result.stop_reason:
        lines.append(f"stopped starting attempts: budget: {result.stop_reason}")
    return "\n".join(lines)


def build_autopilot(args: argparse.Namespace) -> int:
    """``fibreflow build --autopilot`` and ``fibreflow build --resume RUN_ID``."""
    if getattr(args, "escalate", None):
        return _usage("--escalate is for plain builds; the autopilot's ceiling is autopilot.escalate_to in the config")
    from fibreflow.autopilot import AutopilotOptions, resume_autopilot, run_autopilot
    from fibreflow.build.features import FeatureList
    from fibreflow.build.progress import TerminalProgress
    from fibreflow.build.runner import new_run_id
    from fibreflow.errors import AgentError, RunnerError, SandboxUnavailable

    progress = None if args.no_progress or args.json else TerminalProgress(sys.stderr)
    run_id = args.resume or args.run_id or new_run_id()  # known here, so an interrupt can name it
    try:
        if args.resume:
            if args.spec:
                return _usage("--resume takes no FEATURES_OR_GOAL: the run remembers its own")
            _preflight_resume(args.resume)
            result = resume_autopilot(args.resume, progress=progress, echo=progress_echo(args))
        else:
            if not args.spec:
                return _usage("--autopilot needs FEATURES_OR_GOAL (a goal text or a feature_list.json)")
            spec_file = Path(args.spec)
            is_file = spec_file.is_file() and not args.features
            from fibreflow.build.features import load_features
            from fibreflow.config import load_settings

            listed = args.spec if is_file else args.features
            checked = load_features(listed, test_command=args.test_command) if listed else FeatureList(())
            settings = load_settings()
            _, override = routing(args, settings, checked)  # a bad --model or feature agent: exit 2 before the run
            data_sla_config(settings, checked)  # an unknown needs_data SLA: exit 2 before the run
            offline = bool(getattr(args, "offline", False)) or settings.models.offline
            run_preflight(settings, models=(args.agent or "claude") == "claude" or not listed, offline=offline,
                          backend=args.backend or settings.sandbox.backend, override=override)

            options = AutopilotOptions(
                attempts=args.attempts, workers=args.workers, agent=args.agent or "claude",
                agent_command=args.agent_command, agent_timeout=args.agent_timeout,
                agent_script=args.agent_script,
                offline=offline,
                decompose_script=args.decompose_script, backend=args.backend, profile=args.profile,
                test_command=args.test_command, coverage_floor=args.coverage_floor,
                features_path=args.spec if is_file else args.features, no_deploy=bool(args.no_deploy),
                model=args.model, data_policy=args.data_policy)
            result = run_autopilot(None if is_file else args.spec, options, repo=args.repo, run_id=run_id,
                                   progress=progress, echo=progress_echo(args))
    except (AgentError, RunnerError, SandboxUnavailable) as exc:
        return _usage(str(exc))
    except KeyboardInterrupt:  # the step that ran ended "interrupted", its build "cancelled"; main exits 130/143
        _report_autopilot_stopped(run_id)
        raise
    return show_result(result, args, ok=result.ok)


def _preflight_resume(run_id: str) -> None:
    """The preflight of a resumed run, with the options it was started with (an unknown run is left
    to ``resume_autopilot`` to name)."""
    from fibreflow.autopilot import AutopilotOptions
    from fibreflow.autopilot.state import RunLog
    from fibreflow.config import load_settings
    from fibreflow.errors import FibreflowError
    from fibreflow.models.pricing import Pricing
    from fibreflow.models.routing import ModelRouter
    from fibreflow.store import open_store

    settings = load_settings()
    try:
        run = RunLog(open_store(settings.db_path), run_id).get()
    except FibreflowError:
        return
    o = AutopilotOptions.from_dict(run.get("options"))
    override = ModelRouter(settings).resolve_override(o.model, pricing=Pricing.load(settings.models.pricing_path)) \
        if o.model else None
    run_preflight(settings, models=o.agent == "claude", offline=o.offline or settings.models.offline,
                  backend=o.backend or settings.sandbox.backend, override=override)


def _report_autopilot_stopped(run_id: str) -> None:
    """Tell how to continue a stopped autopilot run (when it got as far as being recorded)."""
    from fibreflow.autopilot.state import RunLog
    from fibreflow.errors import FibreflowError
    from fibreflow.store import open_store

    log = RunLog(open_store(), run_id)
    try:
        log.get()
    except FibreflowError:  # stopped before the run was recorded: nothing to resume
        return
    done = [s.step for s in log.steps() if s.status in ("completed", "skipped")]
    print(f"fibreflow build: autopilot run {run_id} stopped; kept {len(done)} completed step(s)"
          + (f" ({', '.join(done)})" if done else "") + f"; continue with `fibreflow build --resume {run_id}`",
          file=sys.stderr, flush=True)
