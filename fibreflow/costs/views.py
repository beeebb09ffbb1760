"""Plotly figures of the cost report; each takes a DataFrame of ``fibreflow.costs.report``.

None reads the store, so the dashboard can rebuild them from whatever data it holds.
"""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from fibreflow.reporting.figures import empty_figure

#: Colour per tier, and for the Sonnet baseline and sandboxes.
TIER_COLORS = {"haiku": "#2ca02c", "sonnet": "#1f77b4", "opus": "#9467bd", "other": "#7f7f7f"}
BASELINE_COLOR = "#bbbbbb"
SANDBOX_COLOR = "#ff7f0e"
MODEL_COLOR = "#1f77b4"


def tier_figure(by_tier: pd.DataFrame, *, title: str = "Model cost by tier against all on Sonnet") -> go.Figure:
    """Per tier: what its calls cost, beside what they would have cost on Sonnet."""
    if by_tier.empty:
        return empty_figure(title, "no model calls in this window")
    fig = go.Figure([
        go.Bar(x=by_tier["tier"], y=by_tier["cost_usd"], name="as run",
               marker_color=[TIER_COLORS.get(t, TIER_COLORS["other"]) for t in by_tier["tier"]],
               customdata=by_tier[["calls", "tokens"]],
               hovertemplate="%{x}: $%{y:.4f}<br>%{customdata[0]} calls, %{customdata[1]:,} tokens<extra></extra>"),
        go.Bar(x=by_tier["tier"], y=by_tier["all_sonnet_cost_usd"], name="same calls on Sonnet",
               marker_color=BASELINE_COLOR, hovertemplate="%{x} on Sonnet: $%{y:.4f}<extra></extra>"),
    ])
    fig.update_layout(title=title, barmode="group", yaxis_title="US dollars", height=400)
    return fig


def agent_figure(by_agent: pd.DataFrame, *, title: str = "Model cost by agent") -> go.Figure:
    """Horizontal bars of cost per agent, the Sonnet baseline beside each."""
    if by_agent.empty:
        return empty_figure(title, "no model calls in this window")
    df = by_agent.sort_values("cost_usd")
    fig = go.Figure([
        go.Bar(y=df["agent"], x=df["cost_usd"], orientation="h", name="as run", marker_color=MODEL_COLOR,
               customdata=df[["calls"]], hovertemplate="%{y}: $%{x:.4f} in %{customdata[0]} calls<extra></extra>"),
        go.Bar(y=df["agent"], x=df["all_sonnet_cost_usd"], orientation="h", name="on Sonnet",
               marker_color=BASELINE_COLOR, hovertemplate="%{y} on Sonnet: $%{x:.4f}<extra></extra>"),
    ])
    fig.update_layout(title=title, barmode="group", xaxis_title="US dollars", height=max(260, 60 * len(df) + 140))
    return fig


def timeline_figure(timeline: pd.DataFrame, projection: pd.DataFrame | None = None, *,
                    title: str = "Cost per day") -> go.Figure:
    """Stacked model and sandbox cost per period; with ``projection``, the daily average as a line."""
    if timeline.empty or not timeline["total_cost_usd"].any():
        return empty_figure(title, "nothing was spent in this window")
    fig = go.Figure([
        go.Bar(x=timeline["period"], y=timeline["model_cost_usd"], name="models", marker_color=MODEL_COLOR,
               customdata=timeline[["calls"]], hovertemplate="%{x|%Y-%m-%d}: models $%{y:.4f} "
                                                             "(%{customdata[0]} calls)<extra></extra>"),
        go.Bar(x=timeline["period"], y=timeline["sandbox_cost_usd"], name="sandboxes", marker_color=SANDBOX_COLOR,
               hovertemplate="%{x|%Y-%m-%d}: sandboxes $%{y:.4f}<extra></extra>"),
    ])
    if projection is not None and not projection.empty:
        total = projection.set_index("kind").loc["total"]
        fig.add_hline(y=float(total["daily_average_usd"]), line_dash="dash", line_color="#333",
                      annotation_text=f"daily average ${total['daily_average_usd']:.4f} · "
                                      f"projected ${total['monthly_projection']:.2f} per 30 days",
                      annotation_position="top left")
    fig.update_layout(title=title, barmode="stack", yaxis_title="US dollars", height=400)
    return fig


def spend_split_figure(model_cost: float, by_backend: pd.DataFrame, *,
                       title: str = "Models and sandboxes") -> go.Figure:
    """Model cost beside the sandbox cost of each backend."""
    labels = ["models", *[f"sandboxes: {b}" for b in by_backend["backend"]]]
    values = [model_cost, *by_backend["est_cost_usd"].astype(float)]
    if not any(values):
        return empty_figure(title, "nothing was spent in this window")
    colors = [MODEL_COLOR, *[SANDBOX_COLOR] * len(by_backend)]
    fig = go.Figure(go.Bar(x=labels, y=values, marker_color=colors, hovertemplate="%{x}: $%{y:.4f}<extra></extra>"))
    fig.update_layout(title=title, yaxis_title="US dollars", showlegend=False, height=360)
    return fig


def savings_figure(savings: pd.DataFrame, *, title: str = "Savings against all on Sonnet") -> go.Figure:
    """The window's cost all on Sonnet, as run and as routed, with the saving of each."""
    if savings.empty or not savings["cost_usd"].any():
        return empty_figure(title, "no model calls in this window")
    text = ["baseline" if i == 0 else f"saves {share:.0%}" for i, share in enumerate(savings["savings_share"])]
    fig = go.Figure(go.Bar(x=savings["scenario"], y=savings["cost_usd"], text=text, textposition="outside",
                           marker_color=[BASELINE_COLOR, MODEL_COLOR, TIER_COLORS["haiku"]][:len(savings)],
                           customdata=savings[["monthly_projection"]],
                           hovertemplate="%{x}: $%{y:.4f}<br>per 30 days $%{customdata[0]:.2f}<extra></extra>"))
    fig.update_layout(title=title, yaxis_title="US dollars", showlegend=False, height=380)
    return fig


__all__ = ["agent_figure", "savings_figure", "spend_split_figure", "tier_figure", "timeline_figure"]
