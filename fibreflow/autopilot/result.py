"""What an autopilot run is and did, read back from the store: the summary and its display."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fibreflow.autopilot.notify import approve_command
from fibreflow.autopilot.state import RunLog, StepRow
from fibreflow.store import Store


def run_cost(store: Store, run_id: str, runner_run_ids: list[str]) -> float:
    """Model cost of every attempt and of the decomposition, plus the sandboxes' estimated cost."""
    total = float(store.scalar("SELECT coalesce(sum(cost_usd), 0) FROM llm_calls WHERE run_id = ? AND status = 'ok'",
                               [run_id]) or 0.0)
    if runner_run_ids:
        marks = ", ".join("?" * len(runner_run_ids))
        total += float(store.scalar(f"SELECT coalesce(sum(cost_usd), 0) FROM attempts WHERE run_id IN ({marks})",
                                    runner_run_ids) or 0.0)
        total += float(store.scalar("SELECT coalesce(sum(est_cost_usd), 0) FROM sandbox_sessions "
                                    f"WHERE run_id IN ({marks})", runner_run_ids) or 0.0)
    return round(total, 6)


def run_summary(store: Store, run_id: str) -> dict[str, Any]:
    """The run as one JSON-able dict: state, features with their winners, deploys, cost, steps."""
    log = RunLog(store, run_id)
    run = log.get()
    steps = log.steps()
    by = {s.step: s for s in steps}
    features = []
    runner_ids = []
    for f in run.get("features") or []:
        fid = f["id"]
        build, select, commit = by.get(f"build:{fid}"), by.get(f"select:{fid}"), by.get(f"commit:{fid}")
        if build is not None and build.detail.get("runner_run_id"):
            runner_ids.append(build.detail["runner_run_id"])
        sel = select.detail if select is not None else {}
        features.append({
            "feature_id": fid, "description": f.get("description"), "status": _feature_status(build, select, commit),
            "attempts": (build.detail.get("attempts") if build else None) or sel.get("attempts") or 0,
            "passing": (build.detail.get("passed") if build else None) or sel.get("passing") or 0,
            "winner": sel.get("winner") if select is not None and select.status == "completed" else None,
            "tests_passed": sel.get("tests_passed", 0), "tests_failed": sel.get("tests_failed", 0),
            "coverage": sel.get("coverage"), "consensus": sel.get("consensus"),
            "needs_review": sel.get("needs_review"), "reason": sel.get("reason") or (build.error if build else None),
            "branch": commit.detail.get("branch") if commit else None,
            "commit": commit.detail.get("commit") if commit else None,
            "learnings_shown": len(build.detail.get("learnings_shown", [])) if build else 0,
            "patterns_stored": len(build.detail.get("patterns_stored", [])) if build else 0})
    staging, smoke, notify, suite = by.get("deploy:staging"), by.get("smoke"), by.get("notify"), by.get("test_suite")
    failed = next((s for s in steps if s.status in ("failed", "running", "interrupted", "crashed")), None)
    diff = None
    commits = [f["commit"] for f in features if f["commit"]]
    if commits:
        from fibreflow.autopilot.gitrepo import diff_stats

        try:
            diff = diff_stats(Path(run["repo"]), run["base_commit"], commits[-1]).short()
        except Exception:  # the repository moved or was removed since: the summary still reads
            diff = None
    return {
        "run_id": run_id, "goal": run.get("goal"), "repo": run["repo"], "state": run["state"],
        "base_ref": run.get("base_ref"), "base_commit": run["base_commit"], "branch": run.get("branch"),
        "commit": run.get("commit_sha"), "features": features, "diff": diff,
        "needs_review": any(bool(f["needs_review"]) for f in features),
        "staging_url": run.get("staging_url") or (staging.detail.get("staging_url") if staging else None),
        "smoke": (smoke.detail.get("checks") or []) if smoke else [],
        "test_suite": ({k: suite.detail.get(k) for k in ("command", "tests_passed", "tests_failed", "tests_errors",
                                                          "failing")} | {"status": suite.status}) if suite else None,
        "notified": notify.detail.get("delivered") if notify else None,
        "notify_error": (notify.detail.get("error") or notify.detail.get("reason")) if notify else None,
        "notification": notify.detail.get("text") if notify else None,
        "cost_usd": run_cost(store, run_id, runner_ids), "failed_step": failed.step if failed else None,
        "error": run.get("error"), "approve_command": approve_command(run_id),
        "decided_by": run.get("decided_by"), "decision_reason": run.get("decision_reason"),
        "steps": [_step(s) for s in steps], "options": run.get("options") or {}}


def _feature_status(build: StepRow | None, select: StepRow | None, commit: StepRow | None) -> str:
    for row in (commit, select, build):
        if row is not None:
            return "committed" if row is commit and row.status == "completed" else f"{row.step.split(':')[0]} {row.status}"
    return "pending"


def _step(row: StepRow) -> dict[str, Any]:
    out = row.to_dict()
    out["detail"] = {k: v for k, v in row.detail.items() if k not in ("blocks", "scores", "text")}
    return out


@dataclass
class AutopilotResult:
    """A run as the CLI and the notebook show it (``summary`` is :func:`run_summary`)."""

    summary: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["summary"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def ok(self) -> bool:
        """The run reached a good state: committed (``--no-deploy``), awaiting approval, approved or deployed."""
        return self.summary.get("state") in ("committed", "awaiting_approval", "approved", "deployed")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.summary)

    def __str__(self) -> str:
        s = self.summary
        lines = [f"autopilot run {s['run_id']}: {s['state']}" + (f" (failed at {s['failed_step']})"
                                                               if s.get("failed_step") else "")]
        if s.get("goal"):
            lines.append(f"  goal: {s['goal']}")
        for f in s["features"]:
            cov = "-" if f["coverage"] is None else f"{f['coverage']:.0%}"
            lines.append(f"  feature {f['feature_id']}: {f['status']}, {f['passing']}/{f['attempts']} passed, "
                         f"winner {f['winner'] or '-'}, coverage {cov}"
                         + (", NEEDS REVIEW (no consensus)" if f["needs_review"] else "")
                         + (f", branch {f['branch']}" if f["branch"] else ""))
        lines.append(f"  diff: {s.get('diff') or '-'}   cost: ${s['cost_usd']:.4f}   staging: {s.get('staging_url') or '-'}")
        suite = s.get("test_suite")
        if suite:
            lines.append(f"  whole test suite ({suite['command']}): {suite['status']}, {suite['tests_passed']} passed, "
                         f"{(suite['tests_failed'] or 0) + (suite['tests_errors'] or 0)} failed")
        for check in s.get("smoke") or []:
            lines.append(f"  smoke {check['name']}: {'ok' if check['ok'] else 'FAILED'}")
        if s.get("notified") is False:
            lines.append(f"  not sent to Slack: {s.get('notify_error')}")
        if s.get("error"):
            lines.append(f"  error: {s['error']}")
        if s["state"] == "committed":
            lines.append(f"  ended at the committed branches (--no-deploy): the whole test suite passed on "
                         f"{s.get('branch') or '-'}; nothing was staged, smoke-tested or sent for approval")
        if s["state"] == "awaiting_approval":
            lines += [f"  approve: {s['approve_command']}", f'  reject:  fibreflow reject {s["run_id"]} --reason "..."']
        if s["state"] == "rejected":
            lines.append(f"  rejected by {s.get('decided_by') or '-'}: {s.get('decision_reason')}")
        elif s.get("decided_by"):
            lines.append(f"  approved by {s['decided_by']}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        s = self.summary
        rows = "".join(
            f"<tr><td>{html.escape(f['feature_id'])}</td><td>{html.escape(f['status'])}</td>"
            f"<td>{f['passing']}/{f['attempts']}</td><td>{html.escape(str(f['winner'] or '-'))}</td>"
            f"<td>{'-' if f['coverage'] is None else format(f['coverage'], '.0%')}</td>"
            f"<td>{'review' if f['needs_review'] else 'agreed'}</td>"
            f"<td>{html.escape(str(f['branch'] or '-'))}</td></tr>" for f in s["features"])
        steps = "".join(f"<tr><td>{html.escape(st['step'])}</td><td>{html.escape(st['status'])}</td>"
                        f"<td>{st['duration_s'] if st['duration_s'] is not None else '-'}</td>"
                        f"<td>{html.escape(st['error'] or '')}</td></tr>" for st in s["steps"])
        head = (f"<h4>Autopilot run {html.escape(s['run_id'])}: {html.escape(s['state'])}</h4>"
                f"<p>{html.escape(s.get('goal') or '')}</p><p>diff {html.escape(s.get('diff') or '-')} · "
                f"cost ${s['cost_usd']:.4f} · staging {html.escape(s.get('staging_url') or '-')}</p>")
        if s["state"] == "awaiting_approval":
            head += f"<p>Approve: <code>{html.escape(s['approve_command'])}</code></p>"
        return (head + "<table><tr><th>feature</th><th>status</th><th>passed</th><th>winner</th><th>coverage</th>"
                f"<th>consensus</th><th>branch</th></tr>{rows}</table><table><tr><th>step</th><th>status</th>"
                f"<th>s</th><th>error</th></tr>{steps}</table>")


def load_result(store: Store, run_id: str) -> AutopilotResult:
    """The run ``run_id`` as an :class:`AutopilotResult`."""
    return AutopilotResult(run_summary(store, run_id))


__all__ = ["AutopilotResult", "load_result", "run_cost", "run_summary"]
