"""The SLA figures are built from the compliance readers' DataFrames (real store rows)."""

from __future__ import annotations

import datetime as dt

import pytest

from fibreflow.sla import views
from fibreflow.sla.compliance import compute_compliance, status_by_hour, values_over_time, violations
from fibreflow.store import Store

NOW = dt.datetime(2025, 3, 31, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def filled(store: Store) -> Store:
    rows = []
    for i in range(120):  # two hours of a 1/min check; "b" breaks its SLA in the second hour
        at = NOW - dt.timedelta(minutes=120 - i)
        rows.append({"name": "a", "status": "warn" if i == 3 else "ok", "value": 10.0, "threshold": 60.0,
                     "warn_after": 30.0, "checked_at": at})
        rows.append({"name": "b", "status": "violation" if i >= 90 else "ok", "value": 100.0 if i >= 90 else 5.0,
                     "threshold": 60.0, "checked_at": at, "reason": None})
    store.insert_rows("sla_checks", rows)
    return store


def test_compliance_figure_bars_and_target(filled: Store) -> None:
    fig = views.compliance_figure(compute_compliance(filled, days=1, now=NOW, target=0.9))
    bar = fig.data[0]
    assert list(bar.x) == ["a", "b"]
    assert list(bar.y) == pytest.approx([100.0, 75.0])
    assert list(bar.marker.color) == [views.STATUS_COLORS["ok"], views.STATUS_COLORS["violation"]]
    assert fig.layout.shapes[0].y0 == pytest.approx(90.0)


def test_heatmap_worst_status_per_hour(filled: Store) -> None:
    hours = status_by_hour(filled, days=1, now=NOW)
    fig = views.status_heatmap(hours)
    heat = fig.data[0]
    assert list(heat.y) == ["a", "b"]
    z = heat.z.tolist()
    assert z[0][:2] == [1.0, 0.0]  # a: a warn in the first hour, all ok in the second
    assert z[1][:2] == [0.0, 3.0]  # b: violations in the second hour
    assert heat.colorscale[-1][1] == views.STATUS_COLORS["violation"]


def test_values_figure_value_and_threshold_per_sla(filled: Store) -> None:
    fig = views.values_figure(values_over_time(filled, days=1, now=NOW))
    names = [(t.name, t.yaxis) for t in fig.data]
    assert ("value", "y") in names and ("threshold", "y2") in names
    assert ("warn_after", "y") in names and ("warn_after", "y2") not in names
    b_values = [t for t in fig.data if t.name == "value" and t.yaxis == "y2"][0]
    assert max(b_values.y) == 100.0


def test_violations_table_and_empty_figures(filled: Store) -> None:
    fig = views.violations_table(violations(filled, days=1, now=NOW))
    cells = fig.data[0].cells.values
    assert list(cells[0]) == ["b"] and list(cells[1]) == ["violation"] and list(cells[7]) == ["yes"]
    empty = compute_compliance(filled, days=1, now=NOW - dt.timedelta(days=5))
    for fig in (views.compliance_figure(empty), views.status_heatmap(status_by_hour(filled, days=1, now=NOW - dt.timedelta(days=5)))):
        assert "no SLA checks" in fig.layout.annotations[0].text


def test_heatmap_of_under_an_hour_of_data_draws_a_whole_hour_cell(store: Store) -> None:
    import pandas as pd

    store.insert_rows("sla_checks", [
        {"name": "fresh", "status": "ok" if i < 15 else "violation", "value": 1.0, "threshold": 60.0,
         "checked_at": NOW - dt.timedelta(minutes=20 - i)} for i in range(20)])  # 20 minutes, one hour bucket
    fig = views.status_heatmap(status_by_hour(store, days=1, now=NOW))
    heat = fig.data[0]
    assert heat.z.tolist() == [[3.0]]
    edges = pd.to_datetime(pd.Series(heat.x), utc=True)
    assert len(edges) == 2 and edges[1] - edges[0] == pd.Timedelta(hours=1)  # x holds the cell's edges
    shown = pd.to_datetime(pd.Series(fig.layout.xaxis.range), utc=True)
    assert (edges[1] - edges[0]) / (shown[1] - shown[0]) >= 1 / 6  # the cell fills a sixth of the axis
    assert shown[0] <= edges[0] and edges[1] <= shown[1]
