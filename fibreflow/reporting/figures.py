"""Plotly helpers every view module shares: the empty-state figure and readable time axes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import pandas as pd
import plotly.graph_objects as go


def empty_figure(title: str, message: str) -> go.Figure:
    """A figure that says there is nothing to show; ``layout.meta`` is "empty" so tests can tell."""
    fig = go.Figure()
    fig.update_layout(title=title, meta="empty", xaxis_visible=False, yaxis_visible=False, height=220,
                      annotations=[{"text": message, "showarrow": False, "font": {"size": 16},
                                    "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5}])
    return fig


def widen_time_axis(fig: go.Figure, times: Iterable[Any], *, span: dt.timedelta, **axis: Any) -> go.Figure:
    """Give a date axis at least ``span`` around its data: plotly zooms a single instant (a demo's
    few seconds of history) to sub-millisecond ticks otherwise."""
    stamps = pd.to_datetime(pd.Series(list(times)), utc=True).dropna()
    if not stamps.empty and stamps.max() - stamps.min() < span:
        mid = stamps.min() + (stamps.max() - stamps.min()) / 2
        fig.update_xaxes(range=[mid - span / 2, mid + span / 2], **axis)
    return fig
