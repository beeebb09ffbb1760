"""Plotly figures of SLA compliance for the report and the dashboard.

Each builder takes a DataFrame from ``fibreflow.sla.compliance`` and returns a ``go.Figure``;
none reads the store, so the dashboard can rebuild them from whatever data it polled.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fibreflow.reporting.figures import empty_figure, widen_time_axis
from fibreflow.sla.compliance import STATUS_RANK

#: Colour per status, in ``STATUS_RANK`` order: green, amber, grey (unmeasured), red.
STATUS_COLORS = {"ok": "#2ca02c", "warn": "#ffbf00", "error": "#7f7f7f", "violation": "#d62728"}


def compliance_figure(compliance: pd.DataFrame, *, title: str = "Compliance per SLA") -> go.Figure:
    """Bars of compliance (%) per SLA, green when the target is met, red when not; a target line."""
    if compliance.empty:
        return empty_figure(title, "no SLA checks in this window")
    df = compliance.fillna({"compliance": 0.0})
    target = float(compliance["target"].iloc[0])
    colors = [STATUS_COLORS["ok"] if met else STATUS_COLORS["violation"] for met in df["met"]]
    hover = [
        f"{r.name}<br>compliance {r.compliance:.2%} of {r.checks} checks"
        f"<br>warn {r.warn_checks} · violation {r.violation_checks} · error {r.error_checks}"
        + (f"<br>error budget left {r.error_budget_left:.0%} · burn rate {r.burn_rate:.2f}"
           if r.checks else "<br>no checks")
        for r in df.itertuples()
    ]
    fig = go.Figure(go.Bar(x=df["name"], y=df["compliance"] * 100, marker_color=colors,
                           hovertext=hover, hoverinfo="text", name="compliance"))
    fig.add_hline(y=target * 100, line_dash="dash", line_color="#333",
                  annotation_text=f"target {target:.0%}", annotation_position="top left")
    fig.update_layout(title=title, yaxis_title="checks meeting the SLA (%)", yaxis_range=[0, 105],
                      showlegend=False, height=420)
    return fig


def status_heatmap(hours: pd.DataFrame, *, title: str = "Status by SLA and hour (UTC)") -> go.Figure:
    """SLA x hour grid coloured by the hour's worst status (green / amber / grey / red).

    Each cell spans its whole hour: ``x`` holds the hour edges (one more than the columns), so a
    single hour of data is one hour wide; with centres only, plotly gives a lone column a width
    of one millisecond on a date axis and the grid looks blank."""
    if hours.empty:
        return empty_figure(title, "no SLA checks in this window")
    rank = hours.pivot(index="name", columns="hour", values="worst_rank")
    full = pd.date_range(rank.columns.min(), rank.columns.max(), freq="h")
    rank = rank.reindex(columns=full)
    labels = hours.assign(label=hours["worst_status"] + " · " + (hours["ok_share"] * 100).round(1).astype(str)
                          + "% ok of " + hours["checks"].astype(str) + " checks")
    text = labels.pivot(index="name", columns="hour", values="label").reindex(index=rank.index, columns=full)
    n = len(STATUS_RANK)
    colorscale = []
    for status, i in sorted(STATUS_RANK.items(), key=lambda kv: kv[1]):
        colorscale += [[i / n, STATUS_COLORS[status]], [(i + 1) / n, STATUS_COLORS[status]]]
    edges = pd.date_range(full[0], full[-1] + pd.Timedelta(hours=1), freq="h")
    fig = go.Figure(go.Heatmap(
        z=rank.to_numpy(dtype=float), x=edges, y=rank.index, text=text.to_numpy(),
        hovertemplate="%{y}<br>%{x}<br>%{text}<extra></extra>", colorscale=colorscale,
        zmin=-0.5, zmax=n - 0.5, xgap=1, ygap=1,
        colorbar={"tickvals": list(STATUS_RANK.values()), "ticktext": list(STATUS_RANK), "title": "worst"}))
    fig.update_layout(title=title, height=max(260, 40 * len(rank.index) + 140),
                      yaxis={"autorange": "reversed"})
    return widen_time_axis(fig, edges, span=dt.timedelta(hours=6))


def values_figure(values: pd.DataFrame, *, title: str = "Value over time against the threshold") -> go.Figure:
    """One panel per SLA: the measured value (bucket maximum) and its threshold, warn_after if set."""
    if values.empty:
        return empty_figure(title, "no SLA checks in this window")
    names = sorted(values["name"].unique())
    fig = make_subplots(rows=len(names), cols=1, shared_xaxes=True, subplot_titles=names,
                        vertical_spacing=min(0.08, 0.5 / len(names)))
    for row, (name, df) in enumerate(values.groupby("name", sort=True), start=1):
        first = row == 1
        fig.add_trace(go.Scatter(x=df["checked_at"], y=df["value"], mode="lines+markers", name="value",
                                 line={"color": "#1f77b4"}, marker={"size": 3}, legendgroup="value",
                                 hovertemplate=f"{name}: %{{y:.4g}}<extra></extra>", showlegend=first),
                      row=row, col=1)
        fig.add_trace(go.Scatter(x=df["checked_at"], y=df["threshold"], mode="lines", name="threshold",
                                 line={"color": STATUS_COLORS["violation"], "dash": "dash", "shape": "hv"},
                                 legendgroup="threshold", showlegend=first), row=row, col=1)
        if df["warn_after"].notna().any():
            fig.add_trace(go.Scatter(x=df["checked_at"], y=df["warn_after"], mode="lines", name="warn_after",
                                     line={"color": STATUS_COLORS["warn"], "dash": "dot", "shape": "hv"},
                                     legendgroup="warn", showlegend=first), row=row, col=1)
    fig.update_layout(title=title, height=160 * len(names) + 140, hovermode="x unified")
    return widen_time_axis(fig, values["checked_at"], span=dt.timedelta(hours=1))


VIOLATION_COLUMNS = {"name": "SLA", "status": "status", "started_at": "started (UTC)",
                     "last_seen_at": "last seen (UTC)", "checks": "checks", "worst_value": "worst value",
                     "threshold": "threshold", "ongoing": "ongoing", "reason": "reason"}


def violations_table(episodes: pd.DataFrame, *, title: str = "Violations") -> go.Figure:
    """A table of violation / error episodes (newest first); says so when there were none."""
    if episodes.empty:
        return empty_figure(title, "no violations in this window")
    df = episodes[list(VIOLATION_COLUMNS)].copy()
    for col in ("started_at", "last_seen_at"):
        df[col] = pd.to_datetime(df[col]).dt.strftime("%Y-%m-%d %H:%M:%S")
    for col in ("worst_value", "threshold"):
        df[col] = df[col].round(2)
    df["ongoing"] = df["ongoing"].map({True: "yes", False: "no"})
    df["reason"] = df["reason"].fillna("")
    fill = [[STATUS_COLORS.get(s, "#f7f7f7") for s in df["status"]] if c == "status" else "#f7f7f7"
            for c in df.columns]
    fig = go.Figure(go.Table(
        header={"values": list(VIOLATION_COLUMNS.values()), "fill_color": "#e8e8e8", "align": "left"},
        cells={"values": [df[c].astype(str).where(df[c].notna(), "") for c in df.columns],
               "fill_color": fill, "align": "left"}))
    fig.update_layout(title=title, height=min(900, 120 + 28 * len(df)))
    return fig
