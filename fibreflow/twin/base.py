"""What every twin panel shares: the filters, the store's change token and the panel base class.

A panel is an ``ipywidgets.VBox`` holding its figures and lists. ``load(state)`` reads the
store (it may run in a worker thread and touches no widget); ``render(data)`` updates the
widgets in place and runs where the widgets live (the kernel's event loop). ``refresh`` does
both, only when the change token of the panel's tables or the filters differ from the last time.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import duckdb
import ipywidgets as widgets
import traitlets

from fibreflow.errors import StoreError
from fibreflow.store import Store, StoreReader, store_tables
from fibreflow.twin.figure import figure_spec, figure_widget, is_live, sync_figure
from fibreflow.twin.shared import SharedReads, fingerprint

#: Tables whose rows are updated in place (not only appended); their token also hashes a status.
_MUTABLE = {"runs": "status, ended_at", "features": "status, ended_at", "attempts": "status, ended_at",
            "sandbox_sessions": "outcome, ended_at", "learned_patterns": "count, weight, retired, last_seen"}


@dataclass(frozen=True)
class FilterState:
    """A snapshot of the filters, safe to hand to a worker thread. ``days`` 0 means all history."""

    days: float = 7.0
    run_id: str | None = None
    agent: str | None = None


class Filters(traitlets.HasTraits):
    """The dashboard's filters; every panel reads them."""

    days = traitlets.Float(7.0, help="time range: the last N days (0: everything)")
    run_id = traitlets.Unicode(None, allow_none=True, help="only this run")
    agent = traitlets.Unicode(None, allow_none=True, help="only this agent")

    def state(self) -> FilterState:
        return FilterState(self.days, self.run_id, self.agent)


def store_token(store: Store, *, con: duckdb.DuckDBPyConnection | None = None) -> dict[str, tuple[Any, ...]]:
    """Per table: row count, highest rowid and, for updated tables, a hash of their changing
    columns. Cheap (one short read, on ``con`` when given), and it changes whenever a row is written."""
    if con is None:
        with store.connect() as own:
            return store_token(store, con=own)
    tables = store_tables(con)
    parts = [f"SELECT '{t}', count(*), max(rowid), "
             + (f"bit_xor(hash({_MUTABLE[t]}))" if t in _MUTABLE else "NULL") + f" FROM {t}"
             for t in tables if t != "schema_version"]
    rows = con.execute(" UNION ALL ".join(parts)).fetchall() if parts else []
    return {r[0]: tuple(r[1:]) for r in rows}


def window(store: StoreReader, state: FilterState, *, now: dt.datetime | None = None) -> tuple[dt.datetime, dt.datetime]:
    """The time range a panel shows: the filter's days before ``now``, narrowed to the selected
    run's (or agent's) active span for data that has no run or agent of its own (SLA checks)."""
    end = now or dt.datetime.now(dt.UTC)
    start = end - dt.timedelta(days=state.days) if state.days > 0 else dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    span = None
    if state.run_id:
        span = store.query_df("SELECT min(started_at) AS s, max(coalesce(ended_at, now())) AS e FROM runs "
                              "WHERE run_id = ?", [state.run_id])
    elif state.agent:
        span = store.query_df("SELECT min(started_at) AS s, max(coalesce(ended_at, now())) AS e FROM attempts "
                              "WHERE agent = ? AND started_at > ?", [state.agent, start])
    if span is not None and not span.empty and span["s"].notna().iloc[0]:
        start, end = max(start, span["s"].iloc[0].to_pydatetime()), min(end, span["e"].iloc[0].to_pydatetime())
    return start, max(start + dt.timedelta(minutes=1), end)


def call_filter(state: FilterState, *, alias: str = "") -> tuple[str, list[Any]]:
    """SQL conditions (``AND ...``) selecting rows of the filtered run and agent."""
    p = f"{alias}." if alias else ""
    sql, params = "", []
    if state.run_id:
        sql += f" AND {p}run_id = ?"
        params.append(state.run_id)
    if state.agent:
        sql += f" AND {p}agent = ?"
        params.append(state.agent)
    return sql, params


def html_list(title: str, items: list[str], *, empty: str = "none") -> str:
    """A titled bullet list (items are escaped)."""
    body = "".join(f"<li>{html.escape(i)}</li>" for i in items) or f"<li><i>{html.escape(empty)}</i></li>"
    return f"<div class='ff-list'><b>{html.escape(title)}</b><ul style='margin:4px 0'>{body}</ul></div>"


def row(*items: Any) -> widgets.HBox:
    """Widgets side by side in equal shares of the width (a FigureWidget's own ``layout`` is
    plotly's, so each goes in a Box that carries the width)."""
    share = f"{100 / len(items):.2f}%"
    return widgets.HBox([widgets.Box([w], layout=widgets.Layout(width=share, display="block")) for w in items])


class ReadSession:
    """The reading half of ``Store`` over one open connection: a panel's load runs several
    queries (the SLA readers one each), and opening DuckDB costs ~15 ms a time."""

    def __init__(self, store: Store, con: duckdb.DuckDBPyConnection) -> None:
        self.path = store.path
        self._con = con

    def query_df(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> Any:
        return self._con.execute(sql, params or []).df()

    def scalar(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        row = self._con.execute(sql, params or []).fetchone()
        return row[0] if row else None

    @contextmanager
    def connect(self, *, write: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        if write:
            raise StoreError(f"{self.path}: a read session cannot write")
        yield self._con


class Panel(widgets.VBox):
    """Base of the five panels: figures by name, an error line, in-place refresh."""

    title: ClassVar[str] = ""
    css: ClassVar[str] = ""
    tables: ClassVar[tuple[str, ...]] = ()
    revision = traitlets.Int(0, help="how many times the panel re-rendered")
    error = traitlets.Unicode("", help="the last load or render error ('' when fine)")

    def __init__(self, store: Store, *, filters: Filters | None = None, shared: SharedReads | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.store = store
        self.shared = shared or SharedReads(str(store.path), enabled=False)
        self.db: StoreReader = store  # what load() reads: one connection per load in safe_load
        self.filters = filters or Filters()
        self.figures: dict[str, Any] = {}
        self._inputs: dict[str, str] = {}
        self._specs: dict[str, str] = {}
        self._key: Any = None
        self._error_line = widgets.HTML(layout=widgets.Layout(display="none"))
        self._error_line.add_class("ff-error")
        self.add_class("ff-panel")
        self.add_class(f"ff-panel-{self.css}")

    def figure(self, name: str, height: int = 360) -> Any:
        """The panel's figure widget called ``name`` (made once, then only updated)."""
        if name not in self.figures:
            import plotly.graph_objects as go

            self.figures[name] = figure_widget(go.Figure(layout={"height": height}))
            self.figures[name].add_class(f"ff-fig-{name}")
        return self.figures[name]

    def show(self, name: str, build: Callable[..., Any], *args: Any, **kwargs: Any) -> bool:
        """Show ``build(*args, **kwargs)`` (a ``go.Figure``) in figure ``name``; False when
        nothing changed. Nothing is built when the inputs are the ones shown last, and the kernels
        of a host build each figure once (``build`` must be a module-level function: its inputs
        are all it reads)."""
        if getattr(build, "__closure__", None):
            raise TypeError(f"{self.title}: figure {name!r} is built by a closure; pass what it reads as arguments")
        inputs = fingerprint((build.__module__, build.__qualname__, args, kwargs))
        widget = self.figure(name)
        if self._inputs.get(name) == inputs:
            return False
        live = is_live(widget)  # a LiveFigure takes the JSON, which one kernel of the host builds
        if live:
            spec = self.shared.get(("figure", inputs), lambda: figure_spec(build(*args, **kwargs)))
        else:
            fig = build(*args, **kwargs)
            spec = figure_spec(fig)
        self._inputs[name] = inputs
        digest = hashlib.sha256(spec.encode()).hexdigest()
        if self._specs.get(name) == digest:
            return False
        if live:
            widget.spec = spec
        else:
            sync_figure(widget, fig)
        self._specs[name] = digest
        return True

    def change_key(self, token: dict[str, tuple[Any, ...]], state: FilterState) -> Any:
        return (tuple(token.get(t) for t in self.tables), state)

    def load(self, state: FilterState) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def render(self, data: Any) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def refresh(self, state: FilterState | None = None, *, token: dict[str, tuple[Any, ...]] | None = None,
                force: bool = False) -> bool:
        """Reload and re-render if the panel's tables or the filters changed; True if it did."""
        state = state or self.filters.state()
        key = self.change_key(token if token is not None else store_token(self.store), state)
        if key == self._key and not force:
            return False
        self.apply(self.safe_load(state), key)
        return True

    def safe_load(self, state: FilterState, *, con: duckdb.DuckDBPyConnection | None = None) -> Any:
        """``load`` over one connection (``con``, or one opened here); the exception it raised, if any."""
        try:
            if con is None:
                with self.store.connect() as own:
                    return self.safe_load(state, con=own)
            self.db = ReadSession(self.store, con)
            try:
                return self.load(state)
            finally:
                self.db = self.store
        except Exception as exc:  # shown in the panel: one bad query must not stop the dashboard
            return exc

    def apply(self, data: Any, key: Any) -> None:
        """Render loaded data (or show the error it raised) and remember what it was loaded for."""
        try:
            if isinstance(data, Exception):
                raise data
            self.render(data)
            self.error = ""
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        self._error_line.value = f"<span style='color:#b00'>could not update: {html.escape(self.error)}</span>"
        self._error_line.layout.display = "" if self.error else "none"
        self._key = key
        self.revision += 1
