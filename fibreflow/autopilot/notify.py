"""The approval request: a Slack Block Kit message sent through the alert delivery code.

The message says what was built and how it was checked (goal, winner, tests, coverage,
consensus, cost, diff stats, staging URL, smoke checks) and how to decide: Approve and Reject
buttons (Block Kit ``actions``, each with the run id as its value, answered by ``fibreflow
approvals serve``) and the ``fibreflow approve RUN_ID`` and ``fibreflow reject RUN_ID --reason ...``
commands. Once decided, :func:`decision_blocks` replaces the buttons with the decision. It goes out
through ``fibreflow.sla.delivery.Transports`` (incoming webhook or bot token from the
environment); with neither configured the step is skipped and the CLI prints the message.
"""

from __future__ import annotations

from typing import Any

from fibreflow.config import Settings

_TEXT_MAX = 2900  # Slack's limit for a section's text is 3000 characters
APPROVE_ACTION = "fibreflow_approve"
REJECT_ACTION = "fibreflow_reject"
ACTIONS_BLOCK = "fibreflow_decision"
_COMMANDS_BLOCK = "fibreflow_commands"


def approve_command(run_id: str) -> str:
    """The command that deploys an awaiting run to production."""
    return f"fibreflow approve {run_id}"


def reject_command(run_id: str) -> str:
    """The command that turns an awaiting run down."""
    return f'fibreflow reject {run_id} --reason "..."'


def _pct(value: float | None) -> str:
    return "not measured" if value is None else f"{value:.0%}"


def build_blocks(summary: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(fallback text, Block Kit blocks) of the approval request for a run ``summary``
    (as :func:`fibreflow.autopilot.pipeline.run_summary` returns it)."""
    run_id = summary["run_id"]
    review = summary.get("needs_review")
    title = "Autopilot build awaits approval" + (" (flagged for review)" if review else "")
    features = summary.get("features") or []
    fields = [
        f"*Winner*\n{', '.join(f['winner'] or '-' for f in features) or '-'}",
        "*Tests*\n" + "; ".join(f"{f['tests_passed']} passed, {f['tests_failed']} failed" for f in features),
        "*Coverage*\n" + "; ".join(_pct(f.get("coverage")) for f in features),
        f"*Cost*\n${summary.get('cost_usd', 0.0):.4f}",
        f"*Diff*\n{summary.get('diff') or '-'}",
        f"*Staging*\n{summary.get('staging_url') or 'no staging URL'}",
    ]
    lines = []
    for f in features:
        consensus = f.get("consensus") or {}
        agreed = "consensus" if consensus.get("agreed") else "NO consensus, review the diff"
        lines.append(f"• `{f['feature_id']}`: {f['passing']}/{f['attempts']} attempts passed, {agreed} "
                     f"({consensus.get('method', 'none')}, {consensus.get('agreement', 0):.0%})")
    smoke = summary.get("smoke") or []
    if smoke:
        lines.append("Smoke: " + ", ".join(f"{s['name']} {'ok' if s['ok'] else 'FAILED'}" for s in smoke))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*Goal*\n{summary.get('goal') or '-'}"[:_TEXT_MAX]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": text[:1900]} for text in fields]},
    ]
    if lines:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:_TEXT_MAX]}})
    blocks += [
        decision_buttons(run_id),
        {"type": "section", "block_id": _COMMANDS_BLOCK, "text": {"type": "mrkdwn", "text": (
            f"*Approve* (deploys to production):\n```{approve_command(run_id)}```\n"
            f"*Reject*:\n```{reject_command(run_id)}```")}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": (
            f"run `{run_id}` · branch `{summary.get('branch') or '-'}` · commit `{(summary.get('commit') or '-')[:12]}`")}]},
    ]
    goal = (summary.get("goal") or run_id).rstrip(". ")
    text = (f"{title}: {goal}. Staging: {summary.get('staging_url') or 'none'}. "
            f"Approve with `{approve_command(run_id)}`.")
    return text, blocks


def decision_buttons(run_id: str) -> dict[str, Any]:
    """The Approve and Reject buttons of a run (the run id is each button's value)."""
    confirm = {"title": {"type": "plain_text", "text": "Deploy to production?"},
               "text": {"type": "mrkdwn", "text": f"Run `{run_id}` goes to production now."},
               "confirm": {"type": "plain_text", "text": "Deploy"}, "deny": {"type": "plain_text", "text": "Cancel"}}
    return {"type": "actions", "block_id": ACTIONS_BLOCK, "elements": [
        {"type": "button", "action_id": APPROVE_ACTION, "style": "primary", "value": run_id,
         "text": {"type": "plain_text", "text": "Approve"}, "confirm": confirm},
        {"type": "button", "action_id": REJECT_ACTION, "style": "danger", "value": run_id,
         "text": {"type": "plain_text", "text": "Reject"}}]}


def decision_blocks(summary: dict[str, Any], *, decided: str, by: str) -> tuple[str, list[dict[str, Any]]]:
    """(text, blocks) of the approval message once ``by`` decided (``approve`` or ``reject``): the
    request as it was, with the buttons replaced by the decision and the run's resulting state."""
    _, blocks = build_blocks(summary)
    state = summary.get("state") or "-"
    verb = "Approved" if decided == "approve" else "Rejected"
    outcome = f"{verb} by {by}: run `{summary['run_id']}` is *{state}*"
    if summary.get("error") and state in ("deploy_blocked", "deploy_failed"):
        outcome += f"\n{str(summary['error'])[:_TEXT_MAX - 200]}"
    elif decided == "reject" and summary.get("decision_reason"):
        outcome += f" ({summary['decision_reason']})"
    decision = {"type": "section", "block_id": ACTIONS_BLOCK, "text": {"type": "mrkdwn", "text": outcome[:_TEXT_MAX]}}
    blocks = [decision if b.get("block_id") == ACTIONS_BLOCK else b for b in blocks
              if b.get("block_id") != _COMMANDS_BLOCK]
    blocks[0] = {"type": "header", "text": {"type": "plain_text",
                                            "text": f"Autopilot build {verb.lower()} ({state})"[:150]}}
    return f"{verb} by {by}: autopilot run {summary['run_id']} is {state}.", blocks


def send_approval_request(summary: dict[str, Any], *, settings: Settings) -> dict[str, Any]:
    """Send the message; the notify step's detail (``delivered`` false with the reason when Slack
    is not configured). A refused or failed delivery raises AlertDeliveryError."""
    from fibreflow.sla.delivery import NO_SLACK_CONFIG, Outgoing, RouteDown, Transports

    text, blocks = build_blocks(summary)
    channel = settings.autopilot.notify_channel or settings.slack.channel
    item = Outgoing(id=0, dedupe_key=f"autopilot:{summary['run_id']}", sla_name="autopilot", kind="approval",
                    severity=None, action="slack", destination=channel, message=text, payload={"blocks": blocks})
    detail: dict[str, Any] = {"channel": channel, "text": text, "blocks": blocks}
    try:
        Transports(settings=settings, rule_urls={}).send(item)
    except RouteDown as exc:
        if str(exc) == NO_SLACK_CONFIG:
            return {**detail, "delivered": False, "reason": NO_SLACK_CONFIG}
        raise
    return {**detail, "delivered": True}


__all__ = ["ACTIONS_BLOCK", "APPROVE_ACTION", "REJECT_ACTION", "approve_command", "build_blocks", "decision_blocks",
           "decision_buttons", "reject_command", "send_approval_request"]
