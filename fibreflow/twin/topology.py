"""Agent topology: orchestrator -> agents -> tools (model tiers, sandboxes, the SLA gate) -> data sources.

Built from recorded attempts, model calls, sandbox sessions and SLA checks in the filtered
range; node size is call volume, colour is layer, agents with a running attempt or a model
call in the last five minutes are ringed. Lists the most-called agents and the bottlenecks.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import ipywidgets as widgets

from fibreflow.store import Store
from fibreflow.twin.base import FilterState, Panel, call_filter, html_list, row, window
from fibreflow.twin.layout import spring_layout

LAYERS = ("orchestrator", "agent", "tool", "data source")
COLORS = {"orchestrator": "#6a3d9a", "agent": "#1f77b4", "tool": "#ff7f0e", "data source": "#2ca02c"}
ACTIVE_WINDOW = dt.timedelta(minutes=5)


class TopologyPanel(Panel):
    """A force-directed graph of who calls what, with the busiest agents and the bottlenecks."""

    title = "Agent topology"
    css = "topology"
    tables = ("attempts", "llm_calls", "sandbox_sessions", "sla_checks", "runs")

    def __init__(self, store: Store, **kwargs: Any) -> None:
        super().__init__(store, **kwargs)
        self.busiest = widgets.HTML()
        self.bottlenecks = widgets.HTML()
        self._positions: dict[str, tuple[float, float]] = {}
        self.children = [self._error_line, self.figure("graph", 560), row(self.busiest, self.bottlenecks)]

    def load(self, state: FilterState) -> dict[str, Any]:
        start, end = window(self.db, FilterState(state.days))
        where, params = call_filter(state)
        w = [start, end]
        q = self.db.query_df
        return {
            "now": dt.datetime.now(dt.UTC), "runs": int(q(
                "SELECT count(*) AS n FROM runs WHERE started_at > ? AND started_at <= ?"
                + (" AND run_id = ?" if state.run_id else ""), w + ([state.run_id] if state.run_id else []))["n"][0]),
            "attempts": q("SELECT agent, count(*) AS attempts, count(*) FILTER (WHERE ended_at IS NULL) AS running,"
                          " count(*) FILTER (WHERE status = 'passed') AS passed, sum(duration_s) AS busy_s,"
                          " max(started_at) AS last FROM attempts WHERE started_at > ? AND started_at <= ?"
                          + where + " GROUP BY agent", w + params),
            "calls": q("SELECT coalesce(agent, '(none)') AS agent, coalesce(tier, model) AS tier, count(*) AS calls,"
                       " count(*) FILTER (WHERE status <> 'ok') AS errors, sum(cost_usd) AS cost,"
                       " quantile_cont(latency_s, 0.95) AS p95_latency, max(created_at) AS last FROM llm_calls"
                       " WHERE created_at > ? AND created_at <= ?" + where + " GROUP BY ALL", w + params),
            "sandboxes": q("SELECT a.agent, s.backend, count(*) AS sessions,"
                           " count(*) FILTER (WHERE s.killed_reason IS NOT NULL) AS killed FROM sandbox_sessions s"
                           " JOIN attempts a USING (attempt_id) WHERE s.started_at > ? AND s.started_at <= ?"
                           + call_filter(state, alias="a")[0] + " GROUP BY ALL", w + params),
            "sources": q("SELECT name, count(*) AS checks, count(DISTINCT cycle_id) AS cycles,"
                         " arg_max(status, checked_at) AS latest FROM sla_checks"
                         " WHERE checked_at > ? AND checked_at <= ? GROUP BY name", list(window(self.db, state))),
        }

    def render(self, data: dict[str, Any]) -> None:
        nodes, edges = _graph(data)
        layers = {n: LAYERS.index(v["layer"]) for n, v in nodes.items()}
        self._positions = spring_layout(list(nodes), edges, layers=layers, previous=self._positions)
        self.show("graph", _figure, nodes, edges, self._positions)
        agents = sorted((v for v in nodes.values() if v["layer"] == "agent"), key=lambda v: -v["calls"])
        self.busiest.value = html_list("Most-called agents", [
            f"{v['label']}: {v['calls']:,} calls, {v['attempts']:,} attempts, ${v['cost']:,.2f}"
            + (" (active)" if v["active"] else "") for v in agents[:5]], empty="no agent activity in this range")
        self.bottlenecks.value = html_list("Bottlenecks", _bottlenecks(data), empty="none found in this range")


def _graph(data: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str, float]]]:
    now = data["now"]
    nodes: dict[str, dict[str, Any]] = {"orchestrator": _node("orchestrator", "orchestrator", data["runs"],
                                                               f"{data['runs']} runs")}
    edges: list[tuple[str, str, float]] = []

    def agent(name: str) -> dict[str, Any]:
        key = f"agent:{name}"
        if key not in nodes:
            nodes[key] = {**_node(name, "agent", 0, ""), "calls": 0, "attempts": 0, "cost": 0.0}
        return nodes[key]

    for r in data["attempts"].itertuples():
        a = agent(r.agent or "(none)")
        a["attempts"] += int(r.attempts)
        a["active"] |= bool(r.running)
    for r in data["calls"].itertuples():
        a = agent(r.agent)
        a["calls"] += int(r.calls)
        a["cost"] += float(r.cost or 0)
        a["active"] |= bool(now - r.last.to_pydatetime() < ACTIVE_WINDOW)
        tool = nodes.setdefault(f"model:{r.tier}", _node(f"model {r.tier}", "tool", 0, ""))
        tool["volume"] += int(r.calls)
        edges.append((f"agent:{r.agent}", f"model:{r.tier}", float(r.calls)))
    for r in data["sandboxes"].itertuples():
        tool = nodes.setdefault(f"sandbox:{r.backend}", _node(f"sandbox {r.backend}", "tool", 0, ""))
        tool["volume"] += int(r.sessions)
        edges.append((f"agent:{r.agent or '(none)'}", f"sandbox:{r.backend}", float(r.sessions)))
    for key, v in list(nodes.items()):
        if v["layer"] == "agent":
            v["volume"] = v["calls"] + v["attempts"]
            v["hover"] = f"{v['calls']:,} calls · {v['attempts']:,} attempts · ${v['cost']:,.2f}"
            edges.append(("orchestrator", key, float(v["volume"])))
        elif v["layer"] == "tool":
            v["hover"] = f"{v['volume']:,} uses"
    if len(data["sources"]):
        cycles = int(data["sources"]["cycles"].max())
        nodes["tool:sla-gate"] = _node("SLA gate", "tool", cycles, f"{cycles:,} check cycles")
        edges.append(("orchestrator", "tool:sla-gate", float(cycles)))
        for r in data["sources"].itertuples():
            nodes[f"source:{r.name}"] = _node(r.name, "data source", int(r.checks),
                                              f"{r.checks:,} checks · latest {r.latest}")
            nodes[f"source:{r.name}"]["active"] = r.latest in ("violation", "error")
            edges.append(("tool:sla-gate", f"source:{r.name}", float(r.checks)))
    return nodes, edges


def _node(label: str, layer: str, volume: int, hover: str) -> dict[str, Any]:
    return {"label": label, "layer": layer, "volume": volume, "hover": hover, "active": False}


def _figure(nodes: dict[str, dict[str, Any]], edges: list[tuple[str, str, float]],
            pos: dict[str, tuple[float, float]]) -> Any:
    import plotly.graph_objects as go

    ex: list[float | None] = []
    ey: list[float | None] = []
    for a, b, _ in edges:
        if a in pos and b in pos:
            ex += [pos[a][0], pos[b][0], None]
            ey += [pos[a][1], pos[b][1], None]
    fig = go.Figure(go.Scatter(x=ex, y=ey, mode="lines", line={"color": "#c8c8c8", "width": 1},
                               hoverinfo="skip", showlegend=False))
    for layer in LAYERS:
        members = [(k, v) for k, v in nodes.items() if v["layer"] == layer]
        if not members:
            continue
        biggest = max([v["volume"] for _, v in members] + [1])  # sizes compare within a layer
        fig.add_trace(go.Scatter(
            x=[pos[k][0] for k, _ in members], y=[pos[k][1] for k, _ in members], mode="markers+text",
            name=layer, text=[v["label"] for _, v in members],
            textposition="middle right" if layer == "data source" else "top center",
            hovertext=[f"{v['label']}<br>{v['hover']}" + ("<br><b>active</b>" if v["active"] else "")
                       for _, v in members], hoverinfo="text",
            marker={"size": [12 + 38 * math.sqrt(v["volume"] / biggest) for _, v in members],
                    "color": COLORS[layer], "opacity": 0.9,
                    "line": {"width": [4 if v["active"] else 1 for _, v in members],
                             "color": ["#ffbf00" if v["active"] else "#ffffff" for _, v in members]}}))
    fig.update_layout(title="Who calls what (size: call volume within its layer; gold ring: active now)",
                      height=560, xaxis={"visible": False, "range": [-0.08, 1.4]},
                      yaxis={"visible": False, "range": [-0.08, 1.08]}, legend={"orientation": "h"},
                      margin={"l": 10, "r": 10, "t": 50, "b": 10})
    return fig


def _bottlenecks(data: dict[str, Any]) -> list[str]:
    found: list[tuple[float, str]] = []
    calls = data["calls"]
    if len(calls):
        for tier, g in calls.groupby("tier"):
            rate = g["errors"].sum() / max(1, g["calls"].sum())
            if rate >= 0.02:
                found.append((rate, f"model {tier}: {rate:.1%} of calls failed (rate limits / overload)"))
        slow = calls.sort_values("p95_latency", ascending=False).iloc[0]
        found.append((0.01, f"slowest calls: {slow.agent} on {slow.tier}, p95 {slow.p95_latency:.1f} s"))
    att = data["attempts"]
    if len(att) and att["busy_s"].sum() > 0:
        att = att.assign(share=att["busy_s"] / att["busy_s"].sum(), pass_rate=att["passed"] / att["attempts"])
        top = att.sort_values("share", ascending=False).iloc[0]
        found.append((top.share * (1 - top.pass_rate), f"{top.agent}: {top.share:.0%} of attempt time, "
                                                        f"{top.pass_rate:.0%} of its attempts pass"))
    box = data["sandboxes"]
    if len(box):
        for backend, g in box.groupby("backend"):
            rate = g["killed"].sum() / max(1, g["sessions"].sum())
            if rate >= 0.02:
                found.append((rate, f"sandbox {backend}: {rate:.1%} of sessions killed (timeout / limits)"))
    for r in data["sources"].itertuples():
        if r.latest in ("violation", "error"):
            found.append((1.0, f"data source {r.name}: {r.latest} now"))
    return [text for _, text in sorted(found, key=lambda x: -x[0])[:6]]
