"""Plotly figures of learning analytics; they take the DataFrames of :mod:`fibreflow.learning.report`."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from fibreflow.learning.report import shorten
from fibreflow.reporting.figures import widen_time_axis


def growth_figure(first_seen: pd.DataFrame, failures: pd.DataFrame, start: dt.datetime) -> go.Figure:
    """Patterns known over time (line) and failures stored per day (bars)."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    if len(first_seen):
        days = pd.to_datetime(first_seen["first"]).dt.floor("D").value_counts().sort_index().cumsum()
        days = days[days.index >= pd.Timestamp(start).floor("D")]
        fig.add_scatter(x=days.index, y=days.values, name="patterns known", mode="lines+markers",
                        line={"shape": "hv", "color": "#2ca02c"})
    if len(failures):
        fig.add_bar(x=failures["day"], y=failures["n"], name="failures stored per day", marker_color="#d9d9d9",
                    secondary_y=True)
    fig.update_layout(title="Knowledge base growth", height=340, legend={"orientation": "h"})
    return widen_time_axis(fig, [*first_seen.get("first", []), *failures.get("day", [])], span=dt.timedelta(days=7))


def iterations_figure(iterations: pd.DataFrame) -> go.Figure:
    """Share of passing attempts per iteration."""
    rate = (iterations["passed"] / iterations["attempts"] * 100) if len(iterations) else pd.Series(dtype=float)
    return go.Figure(
        go.Bar(x=[f"iteration {i}" for i in iterations["iteration"]], y=rate, marker_color="#1f77b4",
               text=[f"{r:.0f}% of {n}" for r, n in zip(rate, iterations["attempts"], strict=True)],
               textposition="auto"),
        layout={"title": "Attempt success rate per iteration (%)", "height": 340, "yaxis_range": [0, 100]})


def patterns_figure(patterns: pd.DataFrame) -> go.Figure:
    """The top failure patterns of the window, retired ones grey."""
    pats = patterns.iloc[::-1]
    return go.Figure(
        go.Bar(y=[f"{p.error_type}: {shorten(p.signature)}" for p in pats.itertuples()], x=pats["n"],
               orientation="h", marker_color=["#bbbbbb" if r else "#d62728" for r in pats["retired"]],
               hovertext=[f"{p.signature}<br>fix: {p.suggested_fix}<br>weight {p.weight:.2f} · helped "
                          f"{p.helped} of {p.shown}" for p in pats.itertuples()], hoverinfo="text"),
        layout={"title": "Top 10 failure patterns in this range (grey: retired)", "height": 420,
                "margin": {"l": 360}})
