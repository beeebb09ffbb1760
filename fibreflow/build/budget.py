"""The budget guard: daily and monthly limits over model and sandbox spend.

Spend is what the store recorded: every model call's price (``llm_calls.cost_usd``) and every
sandbox's estimated cost (``sandbox_sessions.est_cost_usd``) since the start of the UTC day or
month. ``Budget`` is the runner's ``BudgetGuard``: before each attempt it adds what the attempts
under way and the next one are expected to cost (the average recorded attempt on that tier:
its model cost plus its sandbox's) and refuses the attempt when that would cross a limit
(``budget.daily_usd``, ``budget.monthly_usd``). On the way it raises an alert at 80% and at 100%
of each limit, once per period: ``alert`` (the SLA alert path, given from above this layer)
receives a ``BudgetAlert`` whose ``key`` is unique per limit, threshold and period.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from fibreflow.clock import utc_now
from fibreflow.config import BudgetSettings
from fibreflow.store import Store

THRESHOLDS = (0.8, 1.0)


@dataclass(frozen=True)
class BudgetAlert:
    """Spend reached ``threshold`` of a limit in a period."""

    period: str
    """``daily`` or ``monthly``."""
    period_key: str
    """The day (``2026-12-05``) or month (``2026-12``), UTC."""
    threshold: float
    spent_usd: float
    limit_usd: float

    @property
    def key(self) -> str:
        """Unique per limit, threshold and period: the alert is sent once."""
        return f"budget|{self.period}|{self.period_key}|{round(self.threshold * 100)}"

    @property
    def text(self) -> str:
        """The alert's message."""
        verb = "reached" if self.threshold >= 1 else f"passed {self.threshold:.0%} of"
        return (f"fibreflow budget: {self.period} spend ${self.spent_usd:.2f} {verb} the ${self.limit_usd:.2f} "
                f"limit (budget.{self.period}_usd) for {self.period_key}"
                + ("; builds start no more attempts" if self.threshold >= 1 else ""))


def period_starts(now: dt.datetime) -> dict[str, tuple[dt.datetime, str]]:
    """The start and the key of the current UTC day and month."""
    now = now.astimezone(dt.UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return {"daily": (day, f"{day:%Y-%m-%d}"), "monthly": (day.replace(day=1), f"{day:%Y-%m}")}


class Budget:
    """Spend against ``budget.daily_usd`` and ``budget.monthly_usd``; see the module docstring."""

    def __init__(self, store: Store, settings: BudgetSettings, *, alert: Callable[[BudgetAlert], None] | None = None,
                 now: Callable[[], dt.datetime] = utc_now) -> None:
        self.store, self.settings, self.alert, self.now = store, settings, alert, now
        self._alerted: set[str] = set()
        self._estimates: dict[str | None, float] = {}

    @property
    def limits(self) -> dict[str, float]:
        """The limits set, by period."""
        return {p: v for p, v in (("daily", self.settings.daily_usd), ("monthly", self.settings.monthly_usd))
                if v is not None}

    def spent(self) -> dict[str, float]:
        """Model and sandbox dollars recorded since the start of the UTC day and month."""
        out = {}
        for period, (start, _) in period_starts(self.now()).items():
            models = self.store.scalar("SELECT coalesce(sum(cost_usd), 0) FROM llm_calls WHERE created_at >= ?",
                                       [start])
            sandboxes = self.store.scalar("SELECT coalesce(sum(est_cost_usd), 0) FROM sandbox_sessions "
                                          "WHERE started_at >= ?", [start])
            out[period] = float(models or 0) + float(sandboxes or 0)
        return out

    def estimate(self, tier: str | None) -> float:
        """The expected cost of one attempt on ``tier``: the average recorded attempt on it (model
        and sandbox), else the average attempt of any tier, else 0."""
        if tier not in self._estimates:
            sql = ("SELECT avg(coalesce(a.cost_usd, 0) + coalesce(s.est_cost_usd, 0)) FROM attempts a "
                   "LEFT JOIN sandbox_sessions s ON s.attempt_id = a.attempt_id AND s.run_id = a.run_id "
                   "WHERE a.status <> 'error'")
            found = self.store.scalar(sql + " AND a.tier = ?", [tier]) if tier is not None else None
            if found is None:
                found = self.store.scalar(sql)
            self._estimates[tier] = float(found or 0.0)
        return self._estimates[tier]

    def check_alerts(self, spent: dict[str, float] | None = None) -> list[BudgetAlert]:
        """Raise each threshold's alert the first time spend reaches it in a period; the alerts raised."""
        if not self.limits:
            return []
        spent = spent if spent is not None else self.spent()
        keys = period_starts(self.now())
        raised = []
        for period, limit in self.limits.items():
            for threshold in THRESHOLDS:
                if spent[period] >= threshold * limit:
                    alert = BudgetAlert(period, keys[period][1], threshold, spent[period], limit)
                    if alert.key not in self._alerted:
                        self._alerted.add(alert.key)
                        raised.append(alert)
                        if self.alert is not None:
                            self.alert(alert)
        return raised

    def allow(self, tier: str | None, running: int) -> str | None:
        """None when one more attempt on ``tier`` fits every limit with ``running`` under way; else why not."""
        if not self.limits:
            return None
        spent = self.spent()
        self.check_alerts(spent)
        each = self.estimate(tier)
        for period, limit in self.limits.items():
            projected = spent[period] + (running + 1) * each
            if spent[period] >= limit or projected > limit:
                ahead = f" and {running} under way" if running else ""
                return (f"{period} spend ${spent[period]:.4f}, with the next attempt (about ${each:.4f} on "
                        f"{tier or 'its tier'}){ahead}, would cross the ${limit:.2f} limit (budget.{period}_usd)")
        return None


__all__ = ["THRESHOLDS", "Budget", "BudgetAlert", "period_starts"]
