"""Budget alerts through the SLA alert path: the outbox, then Slack.

``budget_alerter`` is the ``alert`` callback of ``fibreflow.build.budget.Budget`` (which sits
below this layer; the CLI joins them). Each ``BudgetAlert`` is queued in ``alert_outbox`` under its
unique key (a limit, a threshold, a period), so it is queued once however many builds reach it,
then the outbox is delivered as the SLA monitor's alerts are (``AlertDispatcher.deliver_pending``:
Slack with ``SLACK_WEBHOOK_URL`` or ``SLACK_BOT_TOKEN``, retried with backoff when refused).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from fibreflow.build.budget import BudgetAlert
from fibreflow.clock import utc_now
from fibreflow.config import Settings
from fibreflow.sla.alerts import AlertDispatcher
from fibreflow.sla.model import MonitoringSettings
from fibreflow.sla.outbox import queue
from fibreflow.store import Store

log = logging.getLogger(__name__)


def queue_budget_alert(store: Store, alert: BudgetAlert, *, channel: str | None) -> int | None:
    """Queue ``alert`` in the outbox; None when its key was queued before (this period's alert was sent)."""
    severity = "critical" if alert.threshold >= 1 else "warning"
    row = {"dedupe_key": alert.key, "sla_name": f"budget.{alert.period}_usd", "kind": "violation",
           "severity": severity, "action": "slack", "destination": channel, "message": alert.text,
           "payload": {"kind": "budget", "period": alert.period, "period_key": alert.period_key,
                       "threshold": alert.threshold, "spent_usd": round(alert.spent_usd, 6),
                       "limit_usd": alert.limit_usd, "text": alert.text, "severity": severity},
           "created_at": utc_now()}
    with store.connect(write=True) as con:
        return queue(con, row)


def budget_alerter(store: Store, settings: Settings, *,
                   environ: Mapping[str, str] | None = None) -> Callable[[BudgetAlert], None]:
    """Queue each budget alert and deliver the outbox; a failed delivery stays queued (and logged)."""
    channel = settings.budget.alert_channel

    def send(alert: BudgetAlert) -> None:
        if queue_budget_alert(store, alert, channel=channel) is None:
            return
        dispatcher = AlertDispatcher(store, [], MonitoringSettings.model_validate({}), settings, environ=environ)
        report = dispatcher.deliver_pending()
        for error in report.errors:
            log.warning("budget alert not delivered yet: %s", error)

    return send


__all__ = ["budget_alerter", "queue_budget_alert"]
