"""The data of the SLA report (``notebooks/sla_report.ipynb``), gathered in one call.

The notebook's parameters are this module's keyword arguments: ``load_sla_report(days=...,
db_path=..., config_path=...)``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from fibreflow.errors import StoreError
from fibreflow.reporting.tables import format_budget, format_percent
from fibreflow.sla.compliance import compute_compliance, status_by_hour, values_over_time, violations
from fibreflow.sla.model import MonitoringSettings
from fibreflow.store import Store

DEFAULT_TARGET = MonitoringSettings.model_fields["compliance_target"].default


@dataclass(frozen=True)
class SLAReport:
    """Everything the SLA report shows; DataFrames as returned by ``fibreflow.sla.compliance``."""

    days: float
    target: float
    db_path: Path
    generated_at: dt.datetime
    compliance: pd.DataFrame
    hours: pd.DataFrame
    values: pd.DataFrame
    violations: pd.DataFrame

    def summary(self) -> str:
        """A Markdown paragraph: how many SLAs met the target, which did not."""
        c = self.compliance
        stamp = self.generated_at.strftime("%Y-%m-%d %H:%M UTC")
        head = (f"Window: the {self.days:g} days up to {stamp}. Store: `{self.db_path}`. "
                f"Target: {format_percent(self.target)} of checks meeting the SLA (warn counts as met).")
        if c.empty:
            return head + "\n\n**No SLA checks were recorded in this window.**"
        missed = c[~c["met"]]
        lines = [head, "", f"**{int(c['met'].sum())} of {len(c)} SLAs met the target.**"]
        for r in missed.itertuples():
            got = ("no checks" if not r.checks else
                   f"{format_percent(r.compliance)}, error budget {format_budget(r.error_budget_left)}")
            lines.append(f"- `{r.name}`: {got}")
        open_episodes = int(self.violations["ongoing"].sum()) if not self.violations.empty else 0
        if open_episodes:
            lines += ["", f"**{open_episodes} violation(s) still ongoing** at the last check."]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return self.summary()


def load_sla_report(*, days: float = 30, db_path: str | Path | None = None,
                    config_path: str | Path | None = None, now: dt.datetime | None = None) -> SLAReport:
    """Read the report's data from the store at ``db_path`` (None: the configured store).

    With ``config_path`` (an SLA definitions file) the report covers exactly its SLAs, those
    without checks shown as unknown, and uses its ``monitoring.compliance_target``; without
    it, every SLA found in the window against the default 95% target.
    """
    store = Store(db_path)
    if not store.exists():
        raise StoreError(f"{store.path}: no fibreflow store here; run `fibreflow sla check` first "
                         "or pass db_path")
    names: list[str] | None = None
    target = DEFAULT_TARGET
    if config_path:
        from fibreflow.sla.config import load_sla_config

        config = load_sla_config(config_path)
        names, target = list(config.slas), config.monitoring.compliance_target
    now = now or dt.datetime.now(dt.UTC)
    return SLAReport(
        days=days, target=target, db_path=store.path, generated_at=now,
        compliance=compute_compliance(store, days=days, target=target, now=now, names=names),
        hours=status_by_hour(store, days=days, now=now, names=names),
        values=values_over_time(store, days=days, now=now, names=names),
        violations=violations(store, days=days, now=now, names=names),
    )
