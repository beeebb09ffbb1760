"""The autopilot pipeline: goal -> features -> N attempts each -> winner -> branch -> the whole
test suite -> staging -> smoke -> approval request, every step a row in ``autopilot_steps``.

A run needs ``autopilot.staging_command`` and ``autopilot.smoke_checks`` (checked before anything
is built); with ``no_deploy`` it ends ``committed`` after the whole test suite instead.

Features are built one after another in dependency order, each on top of the winners before
it: feature k's attempts work on an export of feature k-1's commit, and its winner becomes a
commit on ``<prefix>/<run>/<feature k>`` whose parent is that commit. The last branch holds the
whole goal; it is what staging and production get. ``resume_autopilot`` re-enters the same
sequence and skips every step whose latest try completed.

A run's ``AutopilotOptions`` are resolved and stored with it when it starts; every step reads
them back from the run's row, so a resumed run is built exactly as it began.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fibreflow.agents import Agent
from fibreflow.autopilot import gitrepo
from fibreflow.autopilot.build import AgentFactory, load_attempts, run_feature
from fibreflow.autopilot.options import AutopilotOptions
from fibreflow.autopilot.result import AutopilotResult, load_result, run_cost, run_summary
from fibreflow.autopilot.stages import deploy_step, gate_step, smoke_step
from fibreflow.autopilot.state import DONE, Done, RunLog, StepRow, pid_alive
from fibreflow.autopilot.suite import STEP as SUITE_STEP
from fibreflow.autopilot.suite import suite_step
from fibreflow.build.features import Feature, FeatureList
from fibreflow.build.progress import ProgressCallback
from fibreflow.build.records import set_winner
from fibreflow.config import Settings, load_settings
from fibreflow.errors import AlertDeliveryError, AutopilotError, ConfigError
from fibreflow.store import Store, open_store

Echo = Callable[[str], None]
_T = TypeVar("_T")


@dataclasses.dataclass
class Context:
    """What every step of one run needs."""

    store: Store
    settings: Settings
    log: RunLog
    run: dict[str, Any]
    echo: Echo | None = None
    progress: ProgressCallback | None = None
    agent: Agent | None = None

    @property
    def options(self) -> AutopilotOptions:
        """The options the run was started with (resolved against the settings of that time)."""
        return AutopilotOptions.from_dict(self.run["options"])

    @property
    def repo(self) -> Path:
        return Path(self.run["repo"])

    def step(self, name: str, fn: Callable[[], Done], *, feature_id: str | None = None) -> StepRow:
        return self.log.run_step(name, fn, feature_id=feature_id, echo=self.echo)


def run_autopilot(goal: str | None = None, options: AutopilotOptions | None = None, *, repo: str | Path = ".",
                  run_id: str | None = None, agent: Agent | None = None, store: Store | None = None,
                  settings: Settings | None = None, progress: ProgressCallback | None = None,
                  echo: Echo | None = None) -> AutopilotResult:
    """Build ``goal`` (or the feature list ``options.features_path``) in ``repo`` and stop at the
    approval request.

    ``options`` (``AutopilotOptions``; all defaults when None) say how: attempts, the agent by
    name (``claude``, with ``offline`` the scripted model and ``agent_script`` its conversation;
    ``command`` with ``agent_command``), sandbox backend and profile, coverage floor. Unset
    fields take the ``autopilot``, ``sandbox`` and ``selection`` settings, and the resolved
    options are stored with the run. ``agent`` is an Agent object to use instead of building
    one by name (``options.agent`` becomes its name). Returns the run; a failed step leaves it
    ``failed`` (resumable) with ``failed_step`` and ``error`` set.
    """
    from fibreflow.build.runner import new_run_id
    from fibreflow.sandbox.profiles import load_profile

    settings = settings or load_settings()
    options = options or AutopilotOptions()
    if agent is not None:
        options = dataclasses.replace(options, agent=getattr(agent, "name", type(agent).__name__))
    if not (goal and goal.strip()) and options.features_path is None:
        raise ConfigError("give a goal or a feature list (AutopilotOptions.features_path)", key="goal")
    options = options.resolved(settings)
    require_deploy_settings(settings, options)
    load_profile(_stored(options.profile, "profile"))
    if options.features_path is not None:  # a bad file is a usage error before any run exists
        FeatureList.load(options.features_path, test_command=options.test_command)
    store = store or open_store(settings.db_path)
    root = gitrepo.repo_root(repo)
    ref, base = gitrepo.head(root)
    needs_model = options.agent == "claude" or options.features_path is None  # the agent, or the decomposition
    offline = options.offline or settings.models.offline
    if needs_model and not offline and not os.environ.get("ANTHROPIC_API_KEY"):
        from fibreflow.models.client import MISSING_KEY

        raise ConfigError(MISSING_KEY + " (or give a feature list and a command agent)", key="ANTHROPIC_API_KEY")
    _no_literal_secrets(agent_command=options.agent_command, goal=goal)
    options = dataclasses.replace(options, dirty=tuple(gitrepo.dirty_paths(root)))
    run_id = run_id or new_run_id()
    gitrepo.branch_name(settings.autopilot.branch_prefix, run_id, "x")  # a bad prefix fails before any work
    log = RunLog.create(store, run_id, goal=(goal or "").strip() or None, repo=str(root), base_ref=ref,
                        base_commit=base, options=options.to_dict())
    ctx = Context(store, settings, log, log.get(), echo, progress, agent)
    return _drive(ctx)


def require_deploy_settings(settings: Settings, options: AutopilotOptions) -> None:
    """ConfigError naming the deploy settings a run cannot do without: a staging command and at
    least one smoke check, unless the run ends at its branches (``no_deploy``)."""
    if options.no_deploy:
        return
    cfg = settings.autopilot
    missing = [key for key, ok in (("autopilot.staging_command", bool(cfg.staging_command)),
                                   ("autopilot.smoke_checks", bool(cfg.smoke_checks))) if not ok]
    if missing:
        where = str(settings.source) if settings.source else "fibreflow.yaml (none found; `fibreflow init` writes one)"
        raise ConfigError(f"the autopilot deploys each run to staging and smoke-tests it, but {' and '.join(missing)} "
                          f"{'is' if len(missing) == 1 else 'are'} not set in {where}; set "
                          f"{'it' if len(missing) == 1 else 'them'}, or pass --no-deploy to end the run at its "
                          "committed branches", key=missing[0])


def _stored(value: _T | None, key: str) -> _T:
    """A value every run row has (an option ``AutopilotOptions.resolved`` sets, or the goal of a run
    without a feature list); None only in a damaged row."""
    if value is None:
        raise AutopilotError(f"the run has no {key} recorded (a damaged run row); start a new run")
    return value


def _no_literal_secrets(**values: str | None) -> None:
    """Options are stored with the run: a secret's value in one would reach DuckDB."""
    from fibreflow.sla.delivery import scrub

    for key, value in values.items():
        if value and scrub(value) != value:
            raise ConfigError(f"{key} contains a secret (an API key, token or webhook URL); the run stores its "
                              "options, so refer to it through an environment variable instead", key=key)


def resume_autopilot(run_id: str, *, store: Store | None = None, settings: Settings | None = None,
                     agent: Agent | None = None, progress: ProgressCallback | None = None,
                     echo: Echo | None = None) -> AutopilotResult:
    """Continue a failed or crashed run from its first step that did not complete."""
    settings = settings or load_settings()
    store = store or open_store(settings.db_path)
    log = RunLog(store, run_id)
    run = log.get()
    if run["state"] in ("awaiting_approval", "committed") and all(s.status in DONE for s in log.steps()):
        return load_result(store, run_id)  # nothing left to do until someone decides
    require_deploy_settings(settings, AutopilotOptions.from_dict(run["options"]))

    def not_live(row: dict[str, Any]) -> None:
        if row["state"] == "running" and row["owner_pid"] != os.getpid() and pid_alive(row["owner_pid"]):
            raise AutopilotError(f"run {run_id} is running in process {row['owner_pid']}; not resuming it twice")

    log.claim(("running", "failed", "awaiting_approval"), "running", what="resume", check=not_live,
              owner_pid=os.getpid(), error=None)
    log.close_stale_steps()  # tries a killed process left "running": this process owns the run now
    return _drive(Context(store, settings, log, log.get(), echo, progress, agent))


def _drive(ctx: Context) -> AutopilotResult:
    try:
        _pipeline(ctx)
    except AutopilotError as exc:
        ctx.log.update(state="failed", error=str(exc), owner_pid=None)
    except BaseException as exc:
        ctx.log.update(state="failed", error=f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                       owner_pid=None)
        raise
    return load_result(ctx.store, ctx.log.run_id)


def _pipeline(ctx: Context) -> None:
    decomposed = ctx.step("decompose", lambda: _decompose(ctx))
    features = FeatureList.from_data(decomposed.detail["features"], source="autopilot")
    parent = ctx.run["base_commit"]
    branch = winner = None
    for feature in features.ordered():
        fid = feature.id
        build = ctx.step(f"build:{fid}", functools.partial(_build, ctx, feature, parent), feature_id=fid)
        chosen = ctx.step(f"select:{fid}", functools.partial(_select, ctx, feature, parent, build.detail),
                          feature_id=fid)
        made = ctx.step(f"commit:{fid}", functools.partial(_commit, ctx, feature, parent, chosen.detail),
                        feature_id=fid)
        parent, branch, winner = made.detail["commit"], made.detail["branch"], chosen.detail["winner"]
    runner_ids = [s.detail["runner_run_id"] for s in ctx.log.steps() if s.step.startswith("build:")]
    ctx.log.update(branch=branch, commit_sha=parent, winner_attempt_id=winner,
                   cost_usd=run_cost(ctx.store, ctx.log.run_id, runner_ids),
                   needs_review=any(s.detail.get("needs_review") for s in ctx.log.steps() if s.step.startswith("select:")))
    ctx.run = ctx.log.get()
    ctx.step(SUITE_STEP, lambda: suite_step(ctx))
    if ctx.options.no_deploy:  # --no-deploy: the branches are the result, nothing is staged or sent
        ctx.log.claim(("running",), "committed", what="finish", owner_pid=None,
                      cost_usd=run_cost(ctx.store, ctx.log.run_id, runner_ids))
        return
    ctx.step("sla_gate:staging", lambda: gate_step(ctx, "staging"))
    staged = ctx.step("deploy:staging", lambda: deploy_step(ctx, "staging"))
    if staged.detail.get("staging_url"):
        ctx.log.update(staging_url=staged.detail["staging_url"])
    ctx.step("smoke", lambda: smoke_step(ctx, staged.detail.get("staging_url")))
    ctx.step("notify", lambda: notify_step(ctx))
    ctx.log.claim(("running",), "awaiting_approval", what="finish", owner_pid=None,
                  cost_usd=run_cost(ctx.store, ctx.log.run_id, runner_ids))


def _decompose(ctx: Context) -> Done:
    from fibreflow.autopilot.decompose import decompose_goal, feature_dict, repo_outline

    o, goal = ctx.options, ctx.run.get("goal")
    detail: dict[str, Any]
    if o.features_path:
        found = FeatureList.load(o.features_path, test_command=o.test_command)
        detail = {"source": "file", "path": str(o.features_path)}
        if not goal and found.goal:
            ctx.log.update(goal=found.goal)
    elif o.offline and not o.decompose_script:
        found = FeatureList.from_goal(_stored(goal, "goal"), test_command=o.test_command)
        detail = {"source": "goal", "note": "offline without a decomposition script: the goal is one feature"}
    else:
        from fibreflow.models.client import LLMClient
        from fibreflow.models.scripts import script_path

        script = script_path(o.decompose_script) if o.decompose_script else None
        with LLMClient(store=ctx.store, settings=ctx.settings, offline=o.offline, script=script) as client:
            found, detail = decompose_goal(_stored(goal, "goal"), client=client,
                                           outline=repo_outline(ctx.repo, ctx.run["base_commit"]),
                                           max_features=ctx.settings.autopilot.max_features,
                                           test_command=o.test_command,
                                           tier=ctx.settings.autopilot.decompose_tier, run_id=ctx.log.run_id)
            detail["scripted"] = client.is_scripted
    as_json = [feature_dict(f) for f in found]
    ctx.log.update(features=as_json)
    ctx.run = ctx.log.get()
    if o.dirty:
        detail["note_dirty"] = (f"{len(o.dirty)} file(s) with uncommitted changes are not part of the build, "
                                f"which starts from {ctx.run['base_commit'][:12]}")
    return Done({**detail, "features": as_json})


def _build(ctx: Context, feature: Feature, parent: str) -> Done:
    o = ctx.options
    current = ctx.log.last(f"build:{feature.id}")  # this try's row, written as the step started
    try_no = current.try_no if current is not None else 1
    runner_run_id = f"{ctx.log.run_id}.{feature.id}" + (f".{try_no}" if try_no > 1 else "")
    agents = AgentFactory(o, store=ctx.store, given=ctx.agent)
    try:
        with gitrepo.checkout(ctx.repo, parent, label="build") as tree:
            detail = run_feature(ctx.store, tree, feature, goal=ctx.run.get("goal"), runner_run_id=runner_run_id,
                                 agents=agents, attempts=_stored(o.attempts, "attempts"), workers=o.workers,
                                 backend=_stored(o.backend, "backend"), profile=_stored(o.profile, "profile"),
                                 progress=ctx.progress,
                                 iterations=ctx.settings.autopilot.iterations,
                                 escalate_to=ctx.settings.autopilot.escalate_to)
    finally:
        agents.close()
    detail["base_commit"] = parent
    if detail["passed"] == 0:
        why = f" ({detail['status']}: {detail['reason']})" if detail.get("status") in ("blocked", "error") else ""
        raise AutopilotError(f"feature {feature.id}: no attempt passed its tests ({detail['attempts']} tried){why}; "
                             "resuming builds it again with what was learned", step=f"build:{feature.id}",
                             detail=detail)
    return Done(detail)


def _select(ctx: Context, feature: Feature, parent: str, build: dict[str, Any]) -> Done:
    from fibreflow.autopilot.winner import ReplayPool, choose_winner

    o = ctx.options
    floor = o.coverage_floor if o.coverage_floor is not None else ctx.settings.selection.coverage_floor
    attempts = load_attempts(ctx.store, build["runner_run_id"], feature)
    with gitrepo.checkout(ctx.repo, parent, label="select") as tree:
        pool = ReplayPool(ctx.store, tree, feature_id=feature.id, run_id=build["runner_run_id"],
                          backend=_stored(o.backend, "backend"), profile=_stored(o.profile, "profile"))
        detail = choose_winner(attempts, settings=ctx.settings.selection, coverage_floor=floor, pool=pool)
    set_winner(ctx.store, build["runner_run_id"], feature.id, detail["winner"])
    return Done({**detail, "runner_run_id": build["runner_run_id"]})


def _commit(ctx: Context, feature: Feature, parent: str, chosen: dict[str, Any]) -> Done:
    run_id, winner = ctx.log.run_id, chosen["winner"]
    diff = ctx.store.scalar("SELECT diff FROM attempts WHERE run_id = ? AND attempt_id = ?",
                            [chosen["runner_run_id"], winner]) or ""
    name = gitrepo.branch_name(ctx.settings.autopilot.branch_prefix, run_id, feature.id)
    consensus = chosen.get("consensus") or {}
    message = (f"{feature.id}: {feature.description.splitlines()[0][:60]}\n\n{feature.description}\n\n"
               f"Goal: {ctx.run.get('goal') or '-'}\n\nFibreflow-Run: {run_id}\nFibreflow-Attempt: {winner}\n"
               f"Fibreflow-Consensus: {'agreed' if consensus.get('agreed') else 'none'} "
               f"({consensus.get('method', 'none')}, {consensus.get('agreement', 0):.0%})\n")
    # the run's start time as the commit date: a resumed step makes the very same commit again
    when = ctx.run["created_at"]
    stamp = f"{int(when.timestamp())} +0000"
    commit = gitrepo.commit_diff(ctx.repo, parent, diff, message, date=stamp)
    gitrepo.create_branch(ctx.repo, name, commit)
    stats = gitrepo.diff_stats(ctx.repo, parent, commit)
    return Done({"branch": name, "commit": commit, "parent": parent, "winner": winner, **stats.to_dict()})


def notify_step(ctx: Context) -> Done:
    """Send the approval request (a failed delivery does not stop the run; it is recorded)."""
    from fibreflow.autopilot.notify import send_approval_request

    summary = run_summary(ctx.store, ctx.log.run_id)
    try:
        detail = send_approval_request(summary, settings=ctx.settings)
    except AlertDeliveryError as exc:
        return Done({"delivered": False, "error": str(exc)}, "failed")
    return Done(detail, "completed" if detail["delivered"] else "skipped")


__all__ = ["Context", "gate_step", "notify_step", "require_deploy_settings", "resume_autopilot", "run_autopilot"]
