"""Alert rules over check results: cooldowns, maintenance windows, resolved notices, the outbox.

After each monitor cycle ``AlertDispatcher.evaluate(results)`` decides, per rule, from the
rule's state in ``alert_state`` (one row per rule, about the first SLA its condition names):

* the condition holds -> a ``violation`` notification, unless the rule notified less than its
  cooldown ago (default ``monitoring.cooldown``; it spans episodes, so a flapping SLA pages at
  most once per cooldown) or a maintenance window covers one of the rule's SLAs;
* the condition is false and every SLA it reads has a value -> the episode ends, with a
  ``resolved`` notification if its violation was announced (and ``notify_resolved``);
* the condition is false because a value is missing (source unreadable) -> nothing changes:
  an unreadable source is not a recovery.

Inside a maintenance window nothing is queued; an announced violation that clears there is
resolved at the first evaluation after the window, and one that starts there is announced
after it if it still holds. State and queued notifications are written in one transaction, and
each notification's ``dedupe_key`` is unique, so nothing is queued twice.
``deliver_pending()`` then sends due outbox rows (see ``fibreflow.sla.outbox``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from fibreflow.config import Settings, load_settings
from fibreflow.errors import AlertDeliveryError, ConfigError
from fibreflow.sla import messages
from fibreflow.sla.conditions import Condition, parse_condition
from fibreflow.sla.delivery import Outgoing, RouteDown, Transports, scrub, webhook_destination
from fibreflow.sla.model import AlertRule, CheckResult, MaintenanceWindow, MonitoringSettings
from fibreflow.sla.outbox import Backoff, DeliveryReport, Outbox, queue
from fibreflow.store import Store

log = logging.getLogger(__name__)
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class AlertState:
    """One ``alert_state`` row."""

    rule_key: str
    sla_name: str
    active: bool = False
    since: dt.datetime | None = None
    last_value: float | None = None
    last_notified_at: dt.datetime | None = None

    @property
    def announced(self) -> bool:
        """Whether the current episode's violation was notified."""
        return (self.active and self.since is not None and self.last_notified_at is not None
                and self.last_notified_at >= self.since)


@dataclass(frozen=True)
class _Rule:
    key: str
    rule: AlertRule
    condition: Condition
    sla: str
    cooldown: float
    destination: str | None


def decide(state: AlertState, *, holds: bool, known: bool, silenced: bool, cooldown: float,
           now: dt.datetime, value: float | None, notify_resolved: bool) -> tuple[AlertState, str | None]:
    """The next state of one rule and the notification kind to queue (``violation``/``resolved``/None)."""
    if holds:
        since = state.since if state.active and state.since is not None else now
        due = state.last_notified_at is None or (now - state.last_notified_at).total_seconds() >= cooldown
        notify = not silenced and due
        return replace(state, active=True, since=since, last_value=value,
                       last_notified_at=now if notify else state.last_notified_at), \
            "violation" if notify else None
    if not known:
        return state, None
    if state.announced:
        if silenced:  # keep the episode open so its resolved notice goes out after the window
            return replace(state, last_value=value), None
        return replace(state, active=False, last_value=value), "resolved" if notify_resolved else None
    return replace(state, active=False, last_value=value), None


def window_active(window: MaintenanceWindow, now: dt.datetime) -> bool:
    """Whether the recurring UTC ``window`` covers ``now`` (``days`` name the day it starts on)."""
    now = now.astimezone(dt.UTC)
    start, end = _minutes(window.start), _minutes(window.end)
    minute = now.hour * 60 + now.minute
    if start < end:
        inside, start_day = start <= minute < end, now
    elif minute >= start:  # crosses midnight (or spans the whole day): started today
        inside, start_day = True, now
    else:
        inside, start_day = minute < end, now - dt.timedelta(days=1)
    return inside and (window.days is None or _DAYS[start_day.weekday()] in window.days)


def _minutes(hhmm: str) -> int:
    hours, _, minutes = hhmm.partition(":")
    return int(hours) * 60 + int(minutes)


class AlertDispatcher:
    """Turns check results into queued notifications and delivers the outbox."""

    def __init__(self, store: Store, rules: Sequence[AlertRule], monitoring: MonitoringSettings,
                 settings: Settings | None = None, *, environ: Mapping[str, str] | None = None,
                 backoff: Backoff | None = None, lease_s: float = 300.0, timeout_s: float = 10.0,
                 max_inline_wait_s: float = 2.0, batch_size: int = 100) -> None:
        """Invalid conditions raise ConditionError; bad templates raise ConfigError naming the rule."""
        self.store = store
        self.monitoring = monitoring
        self.settings = settings if settings is not None else load_settings()
        self.environ = environ
        self.outbox = Outbox(store, backoff=backoff, lease_s=lease_s)
        self.timeout_s = timeout_s
        self.max_inline_wait_s = max_inline_wait_s
        self.batch_size = batch_size
        self.rules = self._compile(rules)
        self._latest: dict[str, CheckResult] = {}

    def _compile(self, rules: Sequence[AlertRule]) -> list[_Rule]:
        compiled: list[_Rule] = []
        seen: dict[str, int] = {}
        for i, rule in enumerate(rules):
            condition = parse_condition(rule.condition)
            messages.check_template(rule.message, key=f"alerts.{i}.message")
            messages.check_template(rule.resolved_message, key=f"alerts.{i}.resolved_message")
            target = rule.channel if rule.action == "slack" else rule.url
            if not condition.names:
                raise ConfigError(f"alerts.{i}.condition: {rule.condition!r} names no SLA",
                                  key=f"alerts.{i}.condition")
            if rule.action == "webhook" and not rule.url:
                raise ConfigError(f"alerts.{i}: action webhook needs a url", key=f"alerts.{i}.url")
            ident = "\0".join([rule.action, target or "", " ".join(condition.text.split())])
            key = "rule-" + hashlib.sha1(ident.encode()).hexdigest()[:12]
            seen[key] = seen.get(key, 0) + 1
            if seen[key] > 1:
                key = f"{key}-{seen[key]}"
            destination = (rule.channel or self.settings.slack.channel) if rule.action == "slack" \
                else webhook_destination(rule.url or "", key)
            cooldown = self.monitoring.cooldown if rule.cooldown is None else rule.cooldown
            compiled.append(_Rule(key, rule, condition, condition.primary or "", cooldown, destination))
        return compiled

    def in_maintenance(self, names: frozenset[str] | set[str], now: dt.datetime | None = None) -> bool:
        """Whether a maintenance window silences any of the SLAs ``names`` at ``now``."""
        now = now or dt.datetime.now(dt.UTC)
        return any(window_active(w, now) and (w.slas is None or names & set(w.slas))
                   for w in self.monitoring.maintenance_windows)

    # -- evaluate -----------------------------------------------------------------------

    def evaluate(self, results: Sequence[CheckResult], now: dt.datetime | None = None) -> list[int]:
        """Update rule states from a cycle's results and queue notifications; returns outbox ids."""
        now = now or dt.datetime.now(dt.UTC)
        self._latest.update({r.name: r for r in results})
        present = {r.name for r in results}
        todo = [r for r in self.rules if r.condition.names & present]
        if not todo:
            return []
        values = {name: r.value for name, r in self._latest.items()}
        statuses = {name: r.status for name, r in self._latest.items()}
        queued: list[int] = []
        with self.store.connect(write=True) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                states = {row[0]: AlertState(*row) for row in con.execute(
                    "SELECT rule_key, sla_name, active, since, last_value, last_notified_at FROM alert_state "
                    "WHERE rule_key IN (SELECT unnest(?::VARCHAR[]))", [[r.key for r in todo]]).fetchall()}
                for rule in todo:
                    state = states.get(rule.key) or AlertState(rule.key, rule.sla)
                    # the notification is about the rule's first SLA, or the first one measured yet
                    subject = next(n for n in (rule.sla, *rule.condition.order) if n in self._latest)
                    result = self._latest[subject]
                    new, kind = decide(
                        state, holds=rule.condition.evaluate(values, statuses=statuses),
                        known=rule.condition.is_known(values), silenced=self.in_maintenance(rule.condition.names, now),
                        cooldown=rule.cooldown, now=now, value=result.value,
                        notify_resolved=rule.rule.notify_resolved)
                    # one row per rule_key, kept here: a lake store has no primary key to replace on
                    con.execute("DELETE FROM alert_state WHERE rule_key = ?", [new.rule_key])
                    con.execute("INSERT INTO alert_state (rule_key, sla_name, active, since, "
                                "last_value, last_notified_at) VALUES (?, ?, ?, ?, ?, ?)",
                                [new.rule_key, rule.sla, new.active, new.since, new.last_value,
                                 new.last_notified_at])
                    if kind is not None:
                        outbox_id = queue(con, self._notification(rule, kind, result, state, now))
                        if outbox_id is not None:
                            queued.append(outbox_id)
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
        return queued

    def _notification(self, rule: _Rule, kind: str, result: CheckResult, old: AlertState,
                      now: dt.datetime) -> dict[str, object]:
        severity = rule.rule.severity
        reason = scrub(result.reason) if result.reason else None
        template = rule.rule.message if kind == "violation" else rule.rule.resolved_message
        text = scrub(messages.render(template, name=result.name, value=result.value, threshold=result.threshold,
                                     status=result.status, severity=severity, reason=reason))
        blocks = messages.slack_blocks(kind=kind, text=text, name=result.name, severity=severity,
                                       value=result.value, threshold=result.threshold, status=result.status,
                                       reason=reason, checked_at=result.checked_at)
        # violation: one per triggering measurement; resolved: one per episode
        stamp = result.checked_at if kind == "violation" else (old.since or now)
        payload = {"kind": kind, "sla": result.name, "severity": severity, "value": result.value,
                   "threshold": result.threshold, "status": result.status, "reason": reason, "text": text,
                   "rule_key": rule.key, "checked_at": result.checked_at.astimezone(dt.UTC).isoformat(),
                   "blocks": blocks}
        return {"dedupe_key": f"{rule.key}|{kind}|{stamp.astimezone(dt.UTC).isoformat()}",
                "sla_name": result.name, "kind": kind, "severity": severity, "action": rule.rule.action,
                "destination": rule.destination, "message": text, "payload": payload, "created_at": now}

    # -- deliver ------------------------------------------------------------------------

    def deliver_pending(self, now: dt.datetime | None = None) -> DeliveryReport:
        """Send due outbox rows; failures stay queued with a backoff. Never holds the store during a send."""
        started, mono = now or dt.datetime.now(dt.UTC), time.monotonic()

        def clock() -> dt.datetime:
            return started + dt.timedelta(seconds=time.monotonic() - mono)

        items = self.outbox.claim_due(started, limit=self.batch_size)
        transports = Transports(settings=self.settings, environ=self.environ, timeout_s=self.timeout_s,
                                max_inline_wait_s=self.max_inline_wait_s,
                                rule_urls={r.key: r.rule.url for r in self.rules if r.rule.url})
        delivered = failed = 0
        errors: list[str] = []
        blocked: dict[str, AlertDeliveryError] = {}
        for item in items:
            route = transports.route(item)
            if route in blocked:  # the far side just refused: do not hammer it, keep the row's turn
                self.outbox.mark_retry(item, clock(), str(blocked[route]),
                                       retry_after=blocked[route].retry_after, count_attempt=False)
                continue
            try:
                transports.send(item)
            except Exception as exc:
                error = exc if isinstance(exc, AlertDeliveryError) else \
                    AlertDeliveryError(scrub(f"{type(exc).__name__}: {exc}"))
                due = self.outbox.mark_retry(item, clock(), str(error), retry_after=error.retry_after)
                failed += 1
                errors.append(f"{item.dedupe_key}: {error}")
                log.warning("alert %s to %s not delivered (attempt %d, retry at %s): %s", item.dedupe_key,
                            item.destination, item.attempts + 1, due.isoformat(timespec="seconds"), error)
                if isinstance(error, RouteDown):
                    blocked[route] = error
            else:
                self.outbox.mark_delivered(item, clock())
                delivered += 1
        pending = sum(n for status, n in self.outbox.counts().items() if status in ("pending", "sending"))
        return DeliveryReport(delivered=delivered, failed=failed, pending=pending, errors=errors)

    def pending(self) -> list[Outgoing]:
        """Rows still waiting for delivery, oldest first (for status pages and tests)."""
        return [Outgoing(id=r["id"], dedupe_key=r["dedupe_key"], sla_name=r["sla_name"], kind=r["kind"],
                         severity=r["severity"], action=r["action"], destination=r["destination"],
                         message=r["message"], attempts=r["attempts"])
                for r in self.outbox.rows(statuses=["pending", "sending"])]


__all__ = ["AlertDispatcher", "AlertState", "DeliveryReport", "decide", "window_active"]
