"""The digital twin app: filters, the five panels as tabs, and live polling of the store.

``TwinApp(db_path=None, poll_interval_s=2.0, days=7.0)`` builds every panel from the store
before it is displayed, so the first page already shows data. Then an asyncio task on the
kernel's event loop polls the store's change token every ``poll_interval_s`` and re-renders
only the panels whose tables (or the filters) changed: the panel on screen at once, hidden
ones at most every ``background_interval_s`` (and when they are shown), so a burst of writes
does not keep the poller busy with panels nobody looks at. Queries run in worker threads,
widget updates happen in the task. Between polls a stat of the DuckDB file (every
``watch_interval_s``) brings the next poll forward when the file changed, so a written row is
on screen well within two seconds without querying the store more often.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
import os
import time
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from fibreflow.store import Store
from fibreflow.twin.base import Filters, Panel, store_token
from fibreflow.twin.costs import CostPanel
from fibreflow.twin.infrastructure import InfrastructurePanel
from fibreflow.twin.learning import LearningPanel
from fibreflow.twin.simulation import SimulationPanel
from fibreflow.twin.topology import TopologyPanel

PANELS = (InfrastructurePanel, TopologyPanel, CostPanel, LearningPanel, SimulationPanel)
RANGES = {"last 24 hours": 1.0, "last 7 days": 7.0, "last 14 days": 14.0, "last 30 days": 30.0,
          "all history": 0.0}


class TwinApp(widgets.VBox):
    """The control room: every panel, the filters that apply to all of them, and the poller."""

    def __init__(self, store: Store | None = None, *, db_path: str | Path | None = None,
                 poll_interval_s: float = 2.0, days: float = 7.0, watch_interval_s: float = 0.25,
                 background_interval_s: float = 10.0, start: bool = True) -> None:
        started = time.perf_counter()
        if store is None:
            store = Store(db_path)
            store.migrate()
        self.store = store
        self.poll_interval_s = poll_interval_s
        self.watch_interval_s = watch_interval_s
        self.background_interval_s = background_interval_s
        self.filters = Filters(days=days)
        self.panels: list[Panel] = [cls(store, filters=self.filters) for cls in PANELS]
        ranges = dict(RANGES) if days in RANGES.values() else {f"last {days:g} days": days, **RANGES}
        self.range = widgets.Dropdown(options=list(ranges.items()), value=days, description="time range")
        self.run = widgets.Dropdown(options=[("all runs", None)], value=None, description="run",
                                    layout=widgets.Layout(width="420px"))
        self.agent = widgets.Dropdown(options=[("all agents", None)], value=None, description="agent")
        for control, trait in ((self.range, "days"), (self.run, "run_id"), (self.agent, "agent")):
            widgets.dlink((control, "value"), (self.filters, trait))
        self.status = widgets.HTML()
        self.status.add_class("ff-status")
        self.tabs = widgets.Tab(children=self.panels, titles=[p.title for p in self.panels])
        super().__init__([widgets.HTML("<h2 style='margin:4px 0'>FibreFlow control room</h2>"),
                          widgets.HBox([self.range, self.run, self.agent]), self.status, self.tabs])
        self.add_class("ff-twin")
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self.last_error = ""
        self._token: dict[str, Any] = {}
        self._seen: tuple[tuple[int, int] | None, ...] | None = None
        self.refresh(force=True)
        self.build_s = time.perf_counter() - started
        self._show_status()
        self.filters.observe(self._on_filters, names=["days", "run_id", "agent"])
        self.tabs.observe(self._on_filters, names="selected_index")
        self._rendered_at = dict.fromkeys(range(len(self.panels)), time.monotonic())
        if start:
            self.start()

    # -- refreshing ------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> list[str]:
        """Re-render, in this thread, the panels whose data or filters changed; their titles."""
        token = store_token(self.store)
        self._filter_options(self._option_data())
        state = self.filters.state()
        changed = [p.title for p in self.panels if p.refresh(state, token=token, force=force)]
        self._token = token
        return changed

    async def refresh_async(self) -> list[str]:
        """``refresh`` for the polling task: queries in worker threads, widget updates here."""
        self._seen = seen = self._file_state()  # before the token: a write after it is noticed
        token = await asyncio.to_thread(store_token, self.store)
        if token != self._token:
            self._filter_options(await asyncio.to_thread(self._option_data))
        state = self.filters.state()
        changed = []
        shown = self.tabs.selected_index or 0
        for i in sorted(range(len(self.panels)), key=lambda i: i != shown):  # the panel on screen first
            panel = self.panels[i]
            key = panel.change_key(token, state)
            due = i == shown or time.monotonic() - self._rendered_at[i] >= self.background_interval_s \
                or panel._key is None or key[1] != panel._key[1]  # new filters apply everywhere at once
            if key != panel._key and due:
                if i != shown and self._file_state() != seen and \
                        time.monotonic() - self._rendered_at[i] < 3 * self.background_interval_s:
                    break  # new rows: show them on screen first; hidden panels catch up (but never starve)
                panel.apply(await asyncio.to_thread(panel.safe_load, state), key)
                self._rendered_at[i] = time.monotonic()
                changed.append(panel.title)
        if changed or token != self._token:
            self._token = token
            self._show_status()
        return changed

    def _option_data(self) -> dict[str, Any]:
        q = self.store.query_df
        return {"runs": q("SELECT run_id, goal, status FROM runs ORDER BY started_at DESC LIMIT 200"),
                "agents": q("SELECT DISTINCT agent FROM (SELECT agent FROM attempts UNION ALL "
                            "SELECT agent FROM llm_calls) WHERE agent IS NOT NULL ORDER BY 1")}

    def _filter_options(self, data: dict[str, Any]) -> None:
        runs = [("all runs", None)] + [(f"{r.run_id} · {r.goal or ''} · {r.status}", r.run_id)
                                       for r in data["runs"].itertuples()]
        agents = [("all agents", None)] + [(a, a) for a in data["agents"]["agent"]]
        for control, options in ((self.run, runs), (self.agent, agents)):
            if list(control.options) != options:
                value = control.value
                control.options = options
                control.value = value if value in [v for _, v in options] else None

    def _show_status(self) -> None:
        tok = self._token
        counts = " · ".join(f"{tok[t][0]:,} {label}" for t, label in (
            ("sla_checks", "SLA checks"), ("llm_calls", "model calls"), ("attempts", "attempts"),
            ("learned_patterns", "learned patterns")) if t in tok)
        live = "live" if self._task and not self._task.done() else "not polling"
        errors = [f"{p.title}: {p.error}" for p in self.panels if p.error]
        self.status.value = (
            f"<span class='ff-meta' data-figures='{sum(len(p.figures) for p in self.panels)}' "
            f"data-build-s='{getattr(self, 'build_s', 0):.3f}'>{live} · store {html.escape(str(self.store.path))} · "
            f"updated {dt.datetime.now(dt.UTC):%H:%M:%S} UTC · {counts}</span>"
            + (f"<br><span style='color:#b00'>{html.escape('; '.join(errors + [self.last_error]).strip('; '))}</span>"
               if errors or self.last_error else ""))

    def _on_filters(self, change: dict[str, Any]) -> None:
        if self._wake is not None and self._task is not None and not self._task.done():
            self._wake.set()  # the polling task re-renders at once
        else:
            self.refresh()
            self._show_status()

    # -- polling ---------------------------------------------------------------------------

    def start(self) -> bool:
        """Start polling on the running event loop (the kernel's); False when there is none."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._poll())
        self._show_status()
        return True

    def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
        self._show_status()

    async def _poll(self) -> None:
        while True:
            await self._sleep()
            try:
                await self.refresh_async()
                self.last_error = ""
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store may be busy or briefly unreadable: try again next time
                self.last_error = f"polling failed: {type(exc).__name__}: {exc}"
                self._show_status()

    async def _sleep(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.poll_interval_s
        seen = self._seen or self._file_state()
        while loop.time() < deadline:
            step = min(self.watch_interval_s or self.poll_interval_s, max(0.0, deadline - loop.time()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=step)
                break
            except TimeoutError:
                pass
            if self.watch_interval_s and self._file_state() != seen:
                break
        self._wake.clear()

    def _file_state(self) -> tuple[tuple[int, int] | None, ...]:
        out: list[tuple[int, int] | None] = []
        for path in (self.store.path, Path(f"{self.store.path}.wal")):
            try:
                st = os.stat(path)
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)
