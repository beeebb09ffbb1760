"""The digital twin app: filters, the five panels as tabs, and live polling of the store.

``TwinApp(db_path=None, poll_interval_s=2.0, days=7.0, lazy_tabs=True)`` builds the panel of the
tab on screen from the store before it is displayed, so the first page already shows data; the
other tabs are built (queried, their figures made) the first time they are opened, so a page
draws four figures at first instead of sixteen and each kernel polls only for panels somebody
opened. Then an asyncio task on the kernel's event loop polls the store's change token every
``poll_interval_s`` and re-renders only the built panels whose tables (or the filters) changed:
the panel on screen at once, hidden ones at most every ``background_interval_s`` (and when they
are shown), so a burst of writes does not keep the poller busy with panels nobody looks at. One
poll reads the token and the filter options over one short store connection and the due
panels over a second, in a worker thread; widget updates happen in the task. A stat of the
DuckDB file (every ``watch_interval_s``) brings the next poll forward when the file changed, so
a written row is on screen well within two seconds, and a poll finding the file as it was at the
last read skips the store (but reads at least every ``idle_read_s``): ten idle dashboards do
not keep taking the store's lock from its writers. A store without a local file (a server on
another host, a lake) is read every poll. With ``share_reads`` the kernels of one host share
what they read (``fibreflow.twin.shared``): after a write, one of them reads the token and
the panel on screen, the others load its result.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import html
import os
import time
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from fibreflow.store import Store
from fibreflow.twin.base import Filters, FilterState, Panel, store_token
from fibreflow.twin.costs import CostPanel
from fibreflow.twin.infrastructure import InfrastructurePanel
from fibreflow.twin.learning import LearningPanel
from fibreflow.twin.shared import SharedReads
from fibreflow.twin.simulation import SimulationPanel
from fibreflow.twin.topology import TopologyPanel

PANELS = (InfrastructurePanel, TopologyPanel, CostPanel, LearningPanel, SimulationPanel)
RANGES = {"last 24 hours": 1.0, "last 7 days": 7.0, "last 14 days": 14.0, "last 30 days": 30.0,
          "all history": 0.0}


class TwinApp(widgets.VBox):
    """The control room: every panel, the filters that apply to all of them, and the poller."""

    def __init__(self, store: Store | None = None, *, db_path: str | Path | None = None,
                 poll_interval_s: float = 2.0, days: float = 7.0, watch_interval_s: float = 0.25,
                 background_interval_s: float = 10.0, idle_read_s: float = 30.0, lazy_tabs: bool = True,
                 share_reads: bool = True, start: bool = True) -> None:
        started = time.perf_counter()
        if store is None:
            store = Store(db_path)
            store.migrate()
        self.store = store
        self.poll_interval_s = poll_interval_s
        self.watch_interval_s = watch_interval_s
        self.background_interval_s = background_interval_s
        self.lazy_tabs = lazy_tabs
        self.filters = Filters(days=days)
        self._panels: list[Panel | None] = [None] * len(PANELS)
        self.slots = [widgets.VBox([widgets.HTML("<i class='ff-loading'>loading…</i>")]) for _ in PANELS]
        ranges = dict(RANGES) if days in RANGES.values() else {f"last {days:g} days": days, **RANGES}
        self.range = widgets.Dropdown(options=list(ranges.items()), value=days, description="time range")
        self.run = widgets.Dropdown(options=[("all runs", None)], value=None, description="run",
                                    layout=widgets.Layout(width="420px"))
        self.agent = widgets.Dropdown(options=[("all agents", None)], value=None, description="agent")
        for control, trait in ((self.range, "days"), (self.run, "run_id"), (self.agent, "agent")):
            widgets.dlink((control, "value"), (self.filters, trait))
        self.status = widgets.HTML()
        self.status.add_class("ff-status")
        self.tabs = widgets.Tab(children=self.slots, titles=[cls.title for cls in PANELS])
        super().__init__([widgets.HTML("<h2 style='margin:4px 0'>FibreFlow control room</h2>"),
                          widgets.HBox([self.range, self.run, self.agent]), self.status, self.tabs])
        self.add_class("ff-twin")
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self.last_error = ""
        self._token: dict[str, Any] = {}
        self._seen: tuple[tuple[int, int] | None, ...] | None = None
        self._rendered_at: dict[int, float] = {}
        self._behind = False
        self.shared = SharedReads(str(self.store.path), enabled=share_reads)
        self.idle_read_s = idle_read_s
        self.refresh(force=True)
        self.build_s = time.perf_counter() - started
        self._show_status()
        self.filters.observe(self._on_filters, names=["days", "run_id", "agent"])
        self.tabs.observe(self._on_tab, names="selected_index")
        if start:
            self.start()

    # -- panels ----------------------------------------------------------------------------

    def panel(self, index: int) -> Panel:
        """The panel of tab ``index``, built from the store with the current filters the first time."""
        panel = self._panels[index]
        if panel is None:
            with self.store.connect() as con:
                token = store_token(self.store, con=con)
                panel = self._build(index, token, self.filters.state(), con)
            self._show_status()
        return panel

    @property
    def panels(self) -> list[Panel]:
        """Every panel in tab order, building those not opened yet."""
        return [self.panel(i) for i in range(len(PANELS))]

    @property
    def built(self) -> list[Panel]:
        """The panels built so far (opened, or all when ``lazy_tabs`` is off), in tab order."""
        return [p for p in self._panels if p is not None]

    def _build(self, index: int, token: dict[str, Any], state: FilterState, con: Any) -> Panel:
        panel = PANELS[index](self.store, filters=self.filters, shared=self.shared)
        key = panel.change_key(token, state)
        panel.apply(self.shared.get(("panel", panel.css, key), functools.partial(panel.safe_load, state, con=con)), key)
        self._panels[index] = panel
        self.slots[index].children = [panel]  # after the render: the browser draws each figure once
        self._rendered_at[index] = time.monotonic()
        return panel

    # -- refreshing ------------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> list[str]:
        """Re-render, in this thread, the panels whose data or filters changed (building the one
        on screen, or every one when ``lazy_tabs`` is off, if not built yet); their titles."""
        state = self.filters.state()
        shown = self.tabs.selected_index or 0
        wanted = range(len(PANELS)) if not self.lazy_tabs else [shown]
        changed: list[str] = []
        loaded: dict[int, tuple[Any, Any]] = {}
        with self.store.connect() as con:  # one connection: token, options and every load
            token = store_token(self.store, con=con)
            options = self._option_data(con)
            for i in wanted:
                if self._panels[i] is None:
                    changed.append(self._build(i, token, state, con).title)
            for i, panel in enumerate(self._panels):
                if panel is not None and panel.title not in changed:
                    key = panel.change_key(token, state)
                    if key != panel._key or force:
                        loaded[i] = (panel.safe_load(state, con=con), key)
        self._filter_options(options)
        changed += self._apply(loaded)
        self._token = token
        return changed

    def _apply(self, loaded: dict[int, tuple[Any, Any]]) -> list[str]:
        """Show each loaded panel's data (in the widgets' thread); their titles."""
        titles = []
        for i, (data, key) in loaded.items():
            panel = self._panels[i]
            assert panel is not None
            panel.apply(data, key)
            self._rendered_at[i] = time.monotonic()
            titles.append(panel.title)
        return titles

    async def refresh_async(self) -> list[str]:
        """``refresh`` for the polling task: one read in a worker thread, widget updates here."""
        self._seen = seen = self._file_state()  # before the token: a write after it is noticed
        state = self.filters.state()
        shown = self.tabs.selected_index or 0
        token, options, loaded = await asyncio.to_thread(self._read_due, state, shown, seen)
        if options is not None:
            self._filter_options(options)
        changed = self._apply(loaded)
        self._behind = any(p._key != p.change_key(token, state) for p in self.built)
        if changed or token != self._token:
            self._token = token
            self._show_status()
        return changed

    def _read_due(self, state: FilterState, shown: int,
                  seen: tuple[tuple[int, int] | None, ...]) -> tuple[dict[str, Any], Any, dict[int, tuple[Any, Any]]]:
        """In a worker thread: the token, the filter options if it changed, and the data of each
        built panel that is due (the one on screen first); touches no widget."""
        loaded: dict[int, tuple[Any, Any]] = {}
        if seen[0] is not None:  # a local file: its state names the store's version for every kernel
            token, options = self.shared.get(("token", seen), self._read_token)
        else:
            token, options = self._read_token(with_options=False)
        due = []  # the loads take a second connection: a writer waiting on the lock gets in between
        for i in sorted(range(len(PANELS)), key=lambda i: i != shown):
            panel = self._panels[i]
            if panel is None:
                continue
            key = panel.change_key(token, state)
            age = time.monotonic() - self._rendered_at.get(i, 0.0)
            if key != panel._key and (i == shown or age >= self.background_interval_s or panel._key is None
                                      or key[1] != panel._key[1]):  # new filters apply everywhere at once
                if i != shown and self._file_state() != seen and age < 3 * self.background_interval_s:
                    break  # new rows: show them on screen first; hidden panels catch up (but never starve)
                due.append((i, panel, key))
        for i, panel, key in due:
            loaded[i] = (self.shared.get(("panel", panel.css, key), functools.partial(panel.safe_load, state)), key)
        return token, options, loaded

    def _read_token(self, *, with_options: bool = True) -> tuple[dict[str, Any], Any]:
        with self.store.connect() as con:
            token = store_token(self.store, con=con)
            return token, self._option_data(con) if with_options or token != self._token else None

    @staticmethod
    def _option_data(con: Any) -> dict[str, Any]:
        return {"runs": con.execute("SELECT run_id, goal, status FROM runs ORDER BY started_at DESC LIMIT 200").df(),
                "agents": con.execute("SELECT DISTINCT agent FROM (SELECT agent FROM attempts UNION ALL "
                                      "SELECT agent FROM llm_calls) WHERE agent IS NOT NULL ORDER BY 1").df()}

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
        errors = [f"{p.title}: {p.error}" for p in self.built if p.error]
        self.status.value = (
            f"<span class='ff-meta' data-figures='{sum(len(p.figures) for p in self.built)}' "
            f"data-build-s='{getattr(self, 'build_s', 0):.3f}'>{live} · store {html.escape(str(self.store.path))} · "
            f"updated {dt.datetime.now(dt.UTC):%H:%M:%S} UTC · {counts}</span>"
            + (f"<br><span style='color:#b00'>{html.escape('; '.join(errors + [self.last_error]).strip('; '))}</span>"
               if errors or self.last_error else ""))

    def _on_tab(self, change: dict[str, Any]) -> None:
        if change["new"] is not None and self._panels[change["new"]] is None:
            self.panel(change["new"])  # first opened: built now, so nothing else is due for it
        else:
            self._on_filters(change)

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
        last_read = time.monotonic()
        while True:
            woken = await self._sleep()
            now = self._file_state()
            if not woken and not self._behind and now[0] is not None and now == self._seen \
                    and time.monotonic() - last_read < self.idle_read_s:
                continue  # the file has not changed since the last read: neither has the token
            last_read = time.monotonic()
            try:
                await self.refresh_async()
                self.last_error = ""
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store may be busy or briefly unreadable: try again next time
                self.last_error = f"polling failed: {type(exc).__name__}: {exc}"
                self._show_status()

    async def _sleep(self) -> bool:
        """Wait for the next poll; True when woken by a filter or tab change."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.poll_interval_s
        seen = self._seen or self._file_state()
        woken = False
        while loop.time() < deadline:
            step = min(self.watch_interval_s or self.poll_interval_s, max(0.0, deadline - loop.time()))
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=step)
                woken = True
                break
            except TimeoutError:
                pass
            if self.watch_interval_s and self._file_state() != seen:
                await self._settle()
                break
        self._wake.clear()
        return woken

    async def _settle(self, *, step_s: float = 0.03, limit_s: float = 0.3) -> None:
        """Wait (briefly) until the file stops changing: a write touches the WAL, then the file at
        its checkpoint, and one read after both beats a read per change, each taking the lock."""
        last = self._file_state()
        for _ in range(int(limit_s / step_s)):
            await asyncio.sleep(step_s)
            now = self._file_state()
            if now == last:
                return
            last = now

    def _file_state(self) -> tuple[tuple[int, int] | None, ...]:
        out: list[tuple[int, int] | None] = []
        for path in (self.store.path, Path(f"{self.store.path}.wal")):
            try:
                st = os.stat(path)
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append(None)
        return tuple(out)
