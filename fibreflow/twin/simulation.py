"""Simulation: what-if controls over ``fibreflow.simulation.engine``, re-projected as the controls move.

The calibration is re-read from the store only when its tables change; moving a control
re-projects from the cached calibration (milliseconds). The time filter sets the calibration
window, a run narrows it to the run's span, and the agent filter picks the agent type to add.
"""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from fibreflow.store import Store
from fibreflow.twin.base import FilterState, Panel, html_list, row, window

_CARD = "<div style='padding:6px 10px;border:1px solid #ddd;border-radius:6px;min-height:220px'>{}</div>"


class SimulationPanel(Panel):
    """Agents to add, routing mix and growth rate in; cost, SLA impact, bottlenecks out."""

    title = "Simulation"
    css = "simulation"
    tables = ("llm_calls", "attempts", "sandbox_sessions", "sla_checks")

    def __init__(self, store: Store, **kwargs: Any) -> None:
        super().__init__(store, **kwargs)
        style = {"description_width": "150px"}
        wide = widgets.Layout(width="420px")
        self.agent = widgets.Dropdown(description="agent type", options=[], style=style, layout=wide)
        self.count = widgets.IntSlider(5, min=0, max=50, description="agents to add", style=style, layout=wide)
        self.haiku = widgets.IntSlider(70, min=0, max=100, description="Haiku share (%)", style=style, layout=wide)
        self.sonnet = widgets.IntSlider(25, min=0, max=100, description="Sonnet share (%)", style=style, layout=wide)
        self.opus = widgets.HTML()
        self.growth = widgets.FloatSlider(0.2, min=-0.5, max=1.0, step=0.05, description="growth per month",
                                          readout_format=".0%", style=style, layout=wide)
        self.months = widgets.IntSlider(12, min=1, max=36, description="months ahead", style=style, layout=wide)
        self.count.add_class("ff-sim-count")
        self.growth.add_class("ff-sim-growth")
        self.cards = {name: widgets.HTML() for name in ("agents", "routing", "capacity")}
        for name, card in self.cards.items():
            card.add_class(f"ff-sim-{name}")
        self._cal: Any = None
        self._message = ""
        self._quiet = False
        for w in (self.agent, self.count, self.haiku, self.sonnet, self.growth, self.months):
            w.observe(self._on_control, names="value")
        controls = widgets.VBox([widgets.HTML("<b>What if…</b>"), self.agent, self.count, self.haiku, self.sonnet,
                                 self.opus, self.growth, self.months],
                                layout=widgets.Layout(min_width="450px", width="450px"))
        self.cards["agents"].layout = widgets.Layout(flex="1 1 auto")
        self.children = [self._error_line, widgets.HBox([controls, self.cards["agents"]]),
                         row(self.cards["routing"], self.cards["capacity"]),
                         row(self.figure("limits", 420), self.figure("routing", 420)), self.figure("capacity", 400)]

    def load(self, state: FilterState) -> Any:
        from fibreflow.errors import SimulationError
        from fibreflow.simulation.engine import Calibration

        start, end = window(self.db, FilterState(state.days, state.run_id))
        try:
            return Calibration.from_store(self.db, days=(end - start).total_seconds() / 86400, now=end,
                                          probe_postgres=True)
        except SimulationError as exc:
            return str(exc)

    def render(self, data: Any) -> None:
        self._cal, self._message = (None, data) if isinstance(data, str) else (data, "")
        if self._cal is not None:
            names = sorted(self._cal.agents, key=lambda a: -self._cal.agents[a].attempts)
            keep = self.filters.agent if self.filters.agent in names else self.agent.value
            self._quiet = True  # one projection below, not one per option change
            try:
                self.agent.options = names
                self.agent.value = keep if keep in names else (names[0] if names else None)
            finally:
                self._quiet = False
        self.project()

    def _on_control(self, change: dict[str, Any]) -> None:
        if self._quiet:
            return
        if change["owner"] is self.haiku and self.haiku.value + self.sonnet.value > 100:
            self.sonnet.value = 100 - self.haiku.value  # its observer re-projects
            return
        if change["owner"] is self.sonnet and self.haiku.value + self.sonnet.value > 100:
            self.haiku.value = 100 - self.sonnet.value
            return
        self.project()

    def mix(self) -> tuple[float, float, float]:
        h, s = self.haiku.value, self.sonnet.value
        return h / 100, s / 100, max(0, 100 - h - s) / 100

    def project(self) -> None:
        """Re-run the three projections from the cached calibration and show them."""
        from fibreflow.simulation.engine import (
            DEFAULT_MIXES,
            optimize_model_routing,
            plan_capacity,
            simulate_add_agents,
        )

        self.opus.value = f"<span style='margin-left:160px'>Opus share: <b>{round(self.mix()[2] * 100)}%</b></span>"
        if self._cal is None:
            for card in self.cards.values():
                card.value = _CARD.format(html.escape(self._message or "no history to calibrate on yet"))
            return
        cal = self._cal
        added = simulate_add_agents(self.agent.value, self.count.value, calibration=cal) if self.agent.value else None
        custom = f"custom {'/'.join(str(round(s * 100)) for s in self.mix())}"
        routing = optimize_model_routing({custom: self.mix(), **DEFAULT_MIXES}, calibration=cal)
        capacity = plan_capacity(self.growth.value, months=self.months.value, calibration=cal)
        mine = next(r for r in routing if r.scenario_name == custom)
        if added is not None:
            self.cards["agents"].value = _card(added, f"now ${cal.monthly_cost:,.2f}/month")
        self.cards["routing"].value = _card(mine, f"quality risk {mine.details['quality_risk']:.1%} expected "
                                                  f"attempt failures (recorded {mine.details['recorded_quality_risk']:.1%})",
                                            impact="attempt success rate")
        self.cards["capacity"].value = _card(capacity, "cost in the last month of the horizon")
        if added is not None:
            self.show("limits", _limits_figure, added)
        self.show("routing", _routing_figure, routing)
        self.show("capacity", _capacity_figure, capacity, cal)


def _card(result: Any, note: str, *, impact: str = "data SLA compliance") -> str:
    change = result.projected_sla_impact
    colour = "#b00" if change < -1 else "#333"
    more = len(result.bottlenecks) - 5
    warning = (f"<div class='ff-sim-warning' style='color:#8a4b00;background:#fff3cd;padding:2px 6px'>"
               f"<b>Warning:</b> {html.escape(result.warning)}</div>" if result.warning else "")
    body = (f"<b>{html.escape(result.scenario_name)}</b>{warning}<br>projected cost <b class='ff-cost'>"
            f"{html.escape(result.cost_text())}</b> per month <small>({html.escape(note)})</small><br>"
            f"{html.escape(impact)}: <b style='color:{colour}' class='ff-impact'>{change:+.2f}</b> points"
            + html_list("Bottlenecks", result.bottlenecks[:5] + ([f"… and {more} more"] if more > 0 else []))
            + html_list("Recommendations", result.recommendations[:4]))
    return _CARD.format(body)


def _limits_figure(result: Any) -> Any:
    import plotly.graph_objects as go

    rows = sorted(result.details["limits"], key=lambda r: r["share"])
    colors = {"exceeded": "#d62728", "near": "#ffbf00", "ok": "#2ca02c"}
    fig = go.Figure(go.Bar(y=[r["name"] for r in rows], x=[r["share"] * 100 for r in rows], orientation="h",
                           marker_color=[colors[r["status"]] for r in rows],
                           hovertext=[f"{r['projected']:,.1f} of {r['limit']:,.0f}" for r in rows], hoverinfo="text"))
    fig.add_vline(x=100, line_dash="dash", line_color="#333")
    fig.update_layout(title=f"Limits used after: {result.scenario_name} (%)", height=420, margin={"l": 260})
    return fig


def _routing_figure(results: list[Any]) -> Any:
    from plotly.subplots import make_subplots

    fig = make_subplots(specs=[[{"secondary_y": True}]])
    names = [r.scenario_name for r in results]
    fig.add_bar(x=names, y=[r.projected_cost for r in results], name="cost per month (USD)", marker_color="#1f77b4")
    fig.add_scatter(x=names, y=[r.details["quality_risk"] * 100 for r in results], name="quality risk (%)",
                    mode="markers+lines", marker={"size": 10, "color": "#d62728"}, secondary_y=True)
    fig.update_layout(title="Routing mixes on the recorded workload, cheapest first", height=420,
                      legend={"orientation": "h"})
    return fig


def _capacity_figure(result: Any, cal: Any) -> Any:
    from plotly.subplots import make_subplots

    t = result.details["timeline"]
    months = [r["month"] for r in t]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_scatter(x=months, y=[r["cost"] for r in t], name="cost per month (USD)", mode="lines+markers")
    fig.add_scatter(x=months, y=[cal.settings.monthly_budget_usd] * len(t), name="budget", mode="lines",
                    line={"dash": "dash", "color": "#d62728"})
    fig.add_scatter(x=months, y=[r["peak_sandboxes"] for r in t], name="peak sandboxes at once",
                    mode="lines", line={"color": "#ff7f0e"}, secondary_y=True)
    for plan, limit in cal.settings.e2b_concurrency_limits.items():
        fig.add_scatter(x=months, y=[limit] * len(t), name=f"E2B {plan} limit", mode="lines",
                        line={"dash": "dot", "color": "#ff7f0e"}, secondary_y=True)
    fig.update_layout(title=f"Capacity plan: {result.scenario_name}", height=400, xaxis_title="month",
                      legend={"orientation": "h"})
    return fig


def simulation_explorer(*, db_path: str | None = None, days: float = 30.0) -> SimulationPanel:
    """The simulation panel on its own, calibrated on the last ``days`` of the store at ``db_path``
    (for ``notebooks/simulate.ipynb``)."""
    from fibreflow.store import open_store
    from fibreflow.twin.base import Filters

    panel = SimulationPanel(open_store(db_path), filters=Filters(days=days))
    panel.refresh()
    return panel
