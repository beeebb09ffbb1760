"""The engineer's decision on a run awaiting approval: approve (production deploy) or reject.

Approving moves the run to ``deploying`` atomically, records who approved, runs the SLA gate and
the production command; a gate violation leaves it ``deploy_blocked`` and a failed command
``deploy_failed``, and both can be approved again once the cause is fixed (the approval step is
not repeated, the gate and deploy are). Without ``autopilot.production_command`` there is nothing
to approve into: ``approve_run`` says so (a ConfigError, exit 2) and the run stays as it is.
Rejecting records the reason and removes the run's deploy checkouts; the branch stays for
inspection.
"""

from __future__ import annotations

import datetime as dt
import getpass
import os

from fibreflow.autopilot.deploy import remove_checkouts
from fibreflow.autopilot.pipeline import Context, Echo
from fibreflow.autopilot.result import AutopilotResult, load_result
from fibreflow.autopilot.stages import deploy_step, gate_step
from fibreflow.autopilot.state import Done, RunLog, pid_alive
from fibreflow.config import Settings, load_settings
from fibreflow.errors import AutopilotError, ConfigError
from fibreflow.store import Store, open_store

APPROVABLE = ("awaiting_approval", "deploy_blocked", "deploy_failed")
REJECTABLE = (*APPROVABLE, "committed", "failed", "running")


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def require_production_command(settings: Settings) -> None:
    """ConfigError when ``autopilot.production_command`` is not set: approving would deploy nothing."""
    if not settings.autopilot.production_command:
        where = str(settings.source) if settings.source else "fibreflow.yaml (none found; `fibreflow init` writes one)"
        raise ConfigError("approving deploys the run to production with autopilot.production_command, which is "
                          f"not set in {where}; set it, then approve again (the run stays as it is)",
                          key="autopilot.production_command")


def approve_run(run_id: str, *, by: str | None = None, store: Store | None = None,
                settings: Settings | None = None, echo: Echo | None = None, via: str = "cli") -> AutopilotResult:
    """Approve ``run_id`` and deploy it to production; returns the run (``deployed``, ``approved``,
    ``deploy_blocked`` or ``deploy_failed``). ``via`` (``cli``, ``slack``) is recorded with who decided."""
    settings = settings or load_settings()
    require_production_command(settings)
    store = store or open_store(settings.db_path)
    log = RunLog(store, run_id)
    who = _who(by)
    log.claim(APPROVABLE, "deploying", what="approve", owner_pid=os.getpid(), decided_by=who,
              decided_at=dt.datetime.now(dt.UTC), error=None)
    ctx = Context(store, settings, log, log.get(), echo)
    try:
        log.run_step("approve", lambda: Done({"by": who, "via": via}), echo=echo)
        ctx.step("sla_gate:production", lambda: gate_step(ctx, "production"))
        deployed = ctx.step("deploy:production", lambda: deploy_step(ctx, "production"))
    except AutopilotError as exc:
        blocked = (exc.step or "").startswith("sla_gate")
        log.update(state="deploy_blocked" if blocked else "deploy_failed", error=str(exc), owner_pid=None)
        return load_result(store, run_id)
    except BaseException as exc:
        log.update(state="deploy_failed", error=f"{type(exc).__name__}: {exc}", owner_pid=None)
        raise
    log.update(state="deployed" if deployed.status == "completed" else "approved", owner_pid=None)
    remove_checkouts(run_id, "staging")
    return load_result(store, run_id)


def reject_run(run_id: str, *, reason: str, by: str | None = None, store: Store | None = None,
               settings: Settings | None = None, via: str = "cli") -> AutopilotResult:
    """Reject ``run_id`` with ``reason`` (required); returns the run, now ``rejected``. ``via`` as for
    :func:`approve_run`."""
    if not reason or not reason.strip():
        raise ConfigError("a rejection needs a reason (--reason TEXT)", key="--reason")
    settings = settings or load_settings()
    store = store or open_store(settings.db_path)
    log = RunLog(store, run_id)
    who = _who(by)

    def not_live(row: dict[str, object]) -> None:
        pid = row["owner_pid"]
        if row["state"] in ("running", "deploying") and isinstance(pid, int) and pid_alive(pid):
            raise AutopilotError(f"run {run_id} is {row['state']} in process {pid}; reject it when that ends")

    log.claim(REJECTABLE, "rejected", what="reject", check=not_live, owner_pid=None,
              decided_by=who, decision_reason=reason.strip(), decided_at=dt.datetime.now(dt.UTC))
    log.run_step("reject", lambda: Done({"by": who, "reason": reason.strip(), "via": via}))
    remove_checkouts(run_id)
    return load_result(store, run_id)


__all__ = ["APPROVABLE", "REJECTABLE", "approve_run", "reject_run", "require_production_command"]
