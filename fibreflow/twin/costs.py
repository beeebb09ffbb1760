"""Cost attribution: model cost by tier, agent and feature, sandbox cost beside it, the trend,
the month's projection and the savings against sending every call to Sonnet.

The figures are the cost report's (``fibreflow.costs.views``), fed with the filtered window:
recorded dollars from ``llm_calls.cost_usd`` and ``sandbox_sessions.est_cost_usd``; the
all-Sonnet baseline prices the recorded token usage with ``fibreflow.costs.analysis.Pricing`` (pricing
is linear, so each group's summed usage is priced once).
"""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets
import pandas as pd

from fibreflow.store import Store
from fibreflow.twin.base import FilterState, Panel, call_filter, row, window

USAGE = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
PERIODS = {"day": "D", "week": "W-MON", "month": "MS"}
MONTH_DAYS = 30


class CostPanel(Panel):
    """Where the money goes, and what routing saves."""

    title = "Cost attribution"
    css = "costs"
    tables = ("llm_calls", "sandbox_sessions", "attempts")

    def __init__(self, store: Store, **kwargs: Any) -> None:
        super().__init__(store, **kwargs)
        self.kpis = widgets.HTML()
        self.kpis.add_class("ff-cost-kpis")
        self.period = widgets.ToggleButtons(options=list(PERIODS), value="day", description="Trend by")
        self.period.observe(lambda _: self._trend(), names="value")
        self._data: dict[str, Any] | None = None
        self.children = [self._error_line, self.kpis, row(self.figure("by_tier", 400), self.figure("spend", 360)),
                         row(self.figure("by_agent", 400), self.figure("by_feature", 400)),
                         self.period, self.figure("trend", 400)]

    def load(self, state: FilterState) -> dict[str, Any]:
        from fibreflow.config import load_settings
        from fibreflow.costs.report import tier_of_model
        from fibreflow.models.pricing import Pricing

        start, end = window(self.db, FilterState(state.days))
        where, params = call_filter(state, alias="c")
        calls = self.db.query_df(
            "SELECT date_trunc('day', c.created_at) AS day, c.tier, coalesce(c.agent, '(none)') AS agent,"
            " coalesce(a.feature_id, '(no feature)') AS feature, c.model, count(*) AS calls, sum(c.cost_usd) AS cost_usd, "
            + ", ".join(f"coalesce(sum(c.{u}), 0) AS {u}" for u in USAGE) + ", min(c.created_at) AS first"
            " FROM llm_calls c LEFT JOIN attempts a USING (attempt_id)"
            " WHERE c.status = 'ok' AND c.created_at > ? AND c.created_at <= ?" + where + " GROUP BY ALL",
            [start, end, *params])
        swhere = (" AND s.run_id = ?" if state.run_id else "") + (" AND a.agent = ?" if state.agent else "")
        sandbox = self.db.query_df(
            "SELECT date_trunc('day', s.started_at) AS day, s.backend, coalesce(s.feature_id, '(no feature)') AS feature,"
            " coalesce(sum(s.est_cost_usd), 0) AS est_cost_usd, min(s.started_at) AS first FROM sandbox_sessions s"
            " LEFT JOIN attempts a USING (attempt_id) WHERE s.started_at > ? AND s.started_at <= ?" + swhere
            + " GROUP BY ALL", [start, end, *params])
        settings = load_settings()
        pricing = Pricing.load(settings.models.pricing_path)
        sonnet = settings.models.tiers["sonnet"]
        tiers = dict(settings.models.tiers)
        if len(calls):
            calls["tier"] = [t if isinstance(t, str) and t in tiers else tier_of_model(m, tiers)
                             for t, m in zip(calls["tier"], calls["model"], strict=True)]
            calls["all_sonnet_cost_usd"] = [pricing.price_usage(sonnet, dict(zip(USAGE, u, strict=True)))
                                            for u in calls[list(USAGE)].itertuples(index=False)]
            calls["tokens"] = calls[list(USAGE)].sum(axis=1)
        firsts = [f for df in (calls, sandbox) if len(df) for f in df["first"].dropna()]
        seen = (end - min(firsts)).total_seconds() / 86400 if firsts else 1.0
        span = min((end - start).total_seconds() / 86400, max(1.0, seen))  # as the cost report averages
        return {"calls": calls, "sandbox": sandbox, "span_days": span, "start": start, "end": end}

    def render(self, data: dict[str, Any]) -> None:
        from fibreflow.costs.views import spend_split_figure, tier_figure

        self._data = data
        calls, sandbox = data["calls"], data["sandbox"]
        model_cost = float(calls["cost_usd"].sum()) if len(calls) else 0.0
        box_cost = float(sandbox["est_cost_usd"].sum()) if len(sandbox) else 0.0
        baseline = float(calls["all_sonnet_cost_usd"].sum()) if len(calls) else 0.0
        month = (model_cost + box_cost) / data["span_days"] * MONTH_DAYS
        saved = baseline - model_cost
        self.kpis.value = (
            f"<b>${model_cost + box_cost:,.2f}</b> in {data['span_days']:.1f} days "
            f"(models ${model_cost:,.2f} · sandboxes ${box_cost:,.2f}) · projected month "
            f"<b class='ff-projected-month'>${month:,.2f}</b> · all-Sonnet baseline ${baseline:,.2f}: "
            f"routing {'saved' if saved >= 0 else 'cost'} <b>${abs(saved):,.2f}</b>"
            + (f" ({saved / baseline:.0%})" if baseline else ""))
        self.show("by_tier", tier_figure, _grouped(calls, "tier", order=("haiku", "sonnet", "opus", "other")))
        by_backend = (sandbox.groupby("backend", as_index=False)["est_cost_usd"].sum() if len(sandbox)
                      else pd.DataFrame({"backend": [], "est_cost_usd": []}))
        self.show("spend", spend_split_figure, model_cost, by_backend, title="Model cost beside sandbox cost (USD)")
        self.show("by_agent", _agent_figure, _grouped(calls, "agent"))
        self.show("by_feature", _feature_figure, calls, sandbox)
        self._trend()

    def _trend(self) -> None:
        if self._data is None:
            return
        data, period = self._data, self.period.value
        freq = PERIODS[period]
        model = _per_period(data["calls"], "cost_usd", freq)
        calls = _per_period(data["calls"], "calls", freq)
        box = _per_period(data["sandbox"], "est_cost_usd", freq)
        index = model.index.union(box.index)
        timeline = pd.DataFrame({"period": index, "model_cost_usd": model.reindex(index, fill_value=0.0).values,
                                 "sandbox_cost_usd": box.reindex(index, fill_value=0.0).values,
                                 "calls": calls.reindex(index, fill_value=0).values})
        timeline["total_cost_usd"] = timeline["model_cost_usd"] + timeline["sandbox_cost_usd"]
        total = (timeline["total_cost_usd"].sum()) / data["span_days"]
        projection = pd.DataFrame({"kind": ["total"], "daily_average_usd": [total],
                                   "monthly_projection": [total * MONTH_DAYS]}) if period == "day" else None
        self.show("trend", _trend_figure, timeline, projection, period)


def _agent_figure(by_agent: pd.DataFrame) -> Any:
    from fibreflow.costs.views import agent_figure

    return agent_figure(by_agent).update_layout(height=400)


def _trend_figure(timeline: pd.DataFrame, projection: pd.DataFrame | None, period: str) -> Any:
    from fibreflow.costs.views import timeline_figure

    return timeline_figure(timeline, projection, title=f"Cost per {period} (USD)").update_layout(height=400)


def _grouped(calls: pd.DataFrame, key: str, *, order: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The cost report's per-group frame: calls, tokens, cost_usd, all_sonnet_cost_usd."""
    if not len(calls):
        return pd.DataFrame(columns=[key, "calls", "tokens", "cost_usd", "all_sonnet_cost_usd"])
    out = calls.groupby(key, as_index=False)[["calls", "tokens", "cost_usd", "all_sonnet_cost_usd"]].sum()
    if order:
        return out.sort_values(key, key=lambda s: s.map({t: i for i, t in enumerate(order)}), ignore_index=True)
    return out.sort_values("cost_usd", ascending=False, ignore_index=True)


def _per_period(df: pd.DataFrame, column: str, freq: str) -> pd.Series:
    if not len(df):
        return pd.Series(dtype=float)
    days = pd.to_datetime(df["day"], utc=True).dt.tz_localize(None)
    return df.assign(day=days).set_index("day")[column].fillna(0).resample(freq).sum()


def _feature_figure(calls: pd.DataFrame, sandbox: pd.DataFrame, *, top: int = 15) -> Any:
    import plotly.graph_objects as go

    from fibreflow.costs.views import MODEL_COLOR, SANDBOX_COLOR

    empty = pd.Series(dtype=float)
    model = calls[calls["feature"] != "(no feature)"].groupby("feature")["cost_usd"].sum() if len(calls) else empty
    boxes = sandbox[sandbox["feature"] != "(no feature)"].groupby("feature")["est_cost_usd"].sum() \
        if len(sandbox) else empty
    table = pd.DataFrame({"models": model, "sandboxes": boxes}).fillna(0.0)
    fig = go.Figure(layout={"title": f"Cost by feature, top {top} (USD)", "barmode": "stack", "height": 400})
    if len(table):
        table = table.loc[table.sum(axis=1).sort_values(ascending=False).index[:top]]
        fig.add_bar(x=table.index, y=table["models"], name="models", marker_color=MODEL_COLOR)
        fig.add_bar(x=table.index, y=table["sandboxes"], name="sandboxes", marker_color=SANDBOX_COLOR)
    else:
        fig.add_annotation(text="no feature costs in this range", showarrow=False, xref="paper", yref="paper",
                           x=0.5, y=0.5)
    return fig
