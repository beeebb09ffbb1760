"""Data infrastructure: SLA status by hour, sync latency against its threshold, violations.

The figures come from ``fibreflow.sla.views`` over ``fibreflow.sla.compliance`` readers, the
same ones the SLA report uses. SLA checks belong to no run or agent: those filters narrow the
time range to the run's (agent's) active span instead.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import ipywidgets as widgets

from fibreflow.store import Store
from fibreflow.twin.base import FilterState, Panel, row, window


class InfrastructurePanel(Panel):
    """SLA x hour heatmap, sync latency over the last 24 h, current violations, compliance."""

    title = "Data infrastructure"
    css = "infrastructure"
    tables = ("sla_checks", "runs", "attempts")

    def __init__(self, store: Store, **kwargs: Any) -> None:
        super().__init__(store, **kwargs)
        self.summary = widgets.HTML()
        self.children = [self._error_line, self.summary, self.figure("heatmap", 420),
                         row(self.figure("latency", 380), self.figure("violations", 300)),
                         self.figure("compliance", 360)]

    def load(self, state: FilterState) -> dict[str, Any]:
        from fibreflow.sla.compliance import compute_compliance, status_by_hour, values_over_time, violations

        start, end = window(self.db, state)
        days = (end - start).total_seconds() / 86400
        sync = list(self.db.query_df(
            "SELECT DISTINCT name FROM sla_checks WHERE check_type = 'sync_lag' AND checked_at > ? "
            "ORDER BY name", [end - dt.timedelta(days=1)])["name"])
        episodes = violations(self.db, days=days, now=end, limit=50)
        current = episodes[episodes["ongoing"]] if not episodes.empty else episodes
        return {"hours": status_by_hour(self.db, days=days, now=end),
                "latency": values_over_time(self.db, days=min(1.0, days), now=end, names=sync, max_points=288),
                "violations": current, "episodes": len(episodes),
                "compliance": compute_compliance(self.db, days=days, now=end),
                "start": start, "end": end}

    def render(self, data: dict[str, Any]) -> None:
        from fibreflow.sla.views import compliance_figure, status_heatmap

        self.show("heatmap", status_heatmap, data["hours"])
        self.show("latency", _latency_figure, data["latency"])
        self.show("violations", _violations_figure, data["violations"])
        self.show("compliance", compliance_figure, data["compliance"])
        comp = data["compliance"]
        met = int(comp["met"].sum()) if not comp.empty else 0
        self.summary.value = (
            f"<b>{len(comp)}</b> SLAs between {data['start']:%Y-%m-%d %H:%M} and {data['end']:%Y-%m-%d %H:%M} "
            f"UTC: <b>{met}</b> meet their target, <b>{len(data['violations'])}</b> violated now, "
            f"{data['episodes']} violation episodes in the range")


def _latency_figure(values: Any) -> Any:
    from fibreflow.sla.views import values_figure

    fig = values_figure(values, title="Sync latency, last 24 h, against the threshold (s)")
    return fig.update_layout(height=max(380, fig.layout.height or 0), legend={"orientation": "h"})


def _violations_figure(current: Any) -> Any:
    from fibreflow.sla.views import violations_table

    fig = violations_table(current, title="Current violations")
    return fig.update_layout(height=max(380, (fig.layout.height or 0) + 120))  # half width: headers wrap
