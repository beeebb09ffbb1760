"""The steps after the branch exists: SLA gate, staging or production deploy, smoke checks.

A failed deploy or smoke check is also a failure the knowledge base learns from (stage
``deploy`` or ``smoke``), attributed to the feature and agent whose winner was shipped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fibreflow.autopilot.deploy import (
    run_command,
    runs_dir,
    sla_gate,
    smoke_check,
    stage_checkout,
    staging_url_from,
)
from fibreflow.autopilot.state import Done
from fibreflow.build.attempt import AgentAttempt
from fibreflow.errors import AutopilotError
from fibreflow.learning import FailureKnowledgeBase

if TYPE_CHECKING:
    from fibreflow.autopilot.pipeline import Context

log = logging.getLogger(__name__)


def gate_step(ctx: Context, stage: str) -> Done:
    """The SLA gate before ``stage``'s deploy (skipped when no gate is configured)."""
    gate = ctx.settings.autopilot.sla_gate
    if gate is None:
        return Done({"reason": "no autopilot.sla_gate configured"}, "skipped")
    return Done(sla_gate(gate, settings=ctx.settings, store=ctx.store, stage=stage))


def deploy_env(ctx: Context, stage: str, checkout: Path) -> dict[str, str]:
    """What a deploy command or smoke command learns from its environment."""
    run = ctx.run
    return {"FIBREFLOW_RUN_ID": ctx.log.run_id, "FIBREFLOW_BRANCH": run.get("branch") or "",
            "FIBREFLOW_COMMIT": run.get("commit_sha") or "", "FIBREFLOW_REPO": run["repo"],
            "FIBREFLOW_STAGE": stage, "FIBREFLOW_CHECKOUT": str(checkout),
            "FIBREFLOW_STAGING_URL": run.get("staging_url") or ""}


def deploy_step(ctx: Context, stage: str) -> Done:
    """Run the configured ``<stage>_command`` in a checkout of the run's commit."""
    cfg = ctx.settings.autopilot
    command = cfg.staging_command if stage == "staging" else cfg.production_command
    if not command:
        return Done({"reason": f"no autopilot.{stage}_command configured"}, "skipped")
    if not ctx.run.get("commit_sha"):
        raise AutopilotError(f"run {ctx.log.run_id} has no commit to deploy", step=f"deploy:{stage}")
    checkout = stage_checkout(ctx.repo, ctx.run["commit_sha"], ctx.log.run_id, stage)
    result = run_command(command, cwd=checkout, env=deploy_env(ctx, stage, checkout), timeout=cfg.command_timeout_s)
    detail: dict[str, Any] = {**result, "checkout": str(checkout), "commit": ctx.run["commit_sha"]}
    if stage == "staging":
        from fibreflow.yamlio import expand_env

        configured = expand_env(cfg.staging_url, key="autopilot.staging_url") if cfg.staging_url else None
        detail["staging_url"] = staging_url_from(result["output"], configured)
    if result["exit_code"] != 0 or result["timed_out"]:
        why = f"timed out after {cfg.command_timeout_s:g}s" if result["timed_out"] else f"exit {result['exit_code']}"
        learn_stage_failure(ctx, "deploy", result["output"], result["exit_code"], "timeout" if result["timed_out"] else None)
        raise AutopilotError(f"the {stage} deploy failed ({why}): {_last_line(result['output'])}",
                             step=f"deploy:{stage}", detail=detail)
    return Done(detail)


def smoke_step(ctx: Context, staging_url: str | None) -> Done:
    """Run every configured smoke check against staging; any failure fails the step."""
    checks = ctx.settings.autopilot.smoke_checks
    if not checks:
        return Done({"reason": "no autopilot.smoke_checks configured"}, "skipped")
    cwd = runs_dir(ctx.log.run_id) / "staging"
    if not cwd.is_dir():
        cwd = stage_checkout(ctx.repo, ctx.run["commit_sha"], ctx.log.run_id, "staging")
    env = deploy_env(ctx, "smoke", cwd)
    if staging_url:
        env["FIBREFLOW_STAGING_URL"] = staging_url
    results = [smoke_check(c, i, cwd=cwd, env=env, staging_url=staging_url) for i, c in enumerate(checks)]
    failed = [r for r in results if not r["ok"]]
    if failed:
        text = "\n".join(f"smoke check {r['name']} failed: " + (
            f"HTTP {r['status']} (expected {r['expect_status']})" + (f", {r['error']}" if r.get("error") else "")
            if r["kind"] == "http" else f"exit {r['exit_code']}\n{r['output']}") for r in failed)
        learn_stage_failure(ctx, "smoke", text, next((r.get("exit_code") for r in failed), 1) or 1, None)
        raise AutopilotError(f"{len(failed)} of {len(results)} smoke checks failed: "
                             + ", ".join(r["name"] for r in failed), step="smoke", detail={"checks": results})
    return Done({"checks": results})


def learn_stage_failure(ctx: Context, stage: str, output: str, exit_code: int | None,
                        killed_reason: str | None) -> str | None:
    """Store a deploy or smoke failure of the shipped winner in the knowledge base."""
    run = ctx.run
    features = run.get("features") or []
    feature_id = features[-1]["id"] if features else "goal"
    attempt = AgentAttempt(feature_id=feature_id, agent=ctx.options.agent,
                           attempt_id=run.get("winner_attempt_id") or "", run_id=ctx.log.run_id, stage=stage,
                           test_output=output, exit_code=exit_code, killed_reason=killed_reason,
                           feature_text=run.get("goal") or "")
    try:
        return FailureKnowledgeBase(ctx.store).store_failure(attempt)
    except Exception as exc:  # learning is a by-product; the step's own failure is what matters
        log.warning("the %s failure of run %s was not stored in the knowledge base: %s", stage, ctx.log.run_id, exc)
        return None


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


__all__ = ["deploy_env", "deploy_step", "gate_step", "learn_stage_failure", "smoke_step"]
