"""Progress of a build: events from the runner, a terminal bar, a notebook widget.

The runner calls ``progress(event)`` from its coordinating thread only, so a reporter needs no
locking. ``TerminalProgress`` redraws one line on a TTY and prints one line per finished
attempt otherwise (CI logs); ``NotebookProgress`` drives an ipywidgets bar.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TextIO

EventKind = Literal["run_started", "attempt_finished", "feature_finished", "run_finished"]


@dataclass(frozen=True)
class ProgressEvent:
    """Where a build stands after something happened."""

    kind: EventKind
    run_id: str
    done: int
    total: int
    passed: int
    failed: int
    errors: int
    elapsed_s: float
    feature_id: str | None = None
    attempt_id: str | None = None
    status: str | None = None
    message: str | None = None


class ProgressCallback(Protocol):
    def __call__(self, event: ProgressEvent) -> None: ...


class TerminalProgress:
    """A one-line progress bar on a terminal; plain lines when the stream is not a TTY."""

    def __init__(self, stream: TextIO | None = None, *, width: int = 30) -> None:
        self.stream = stream or sys.stderr
        self.width = width
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last_draw = 0.0

    def __call__(self, event: ProgressEvent) -> None:
        counts = f"{event.done}/{event.total} attempts  passed {event.passed}  failed {event.failed}" + (
            f"  errors {event.errors}" if event.errors else "") + f"  {event.elapsed_s:.1f}s"
        if self.tty:
            filled = int(self.width * event.done / event.total) if event.total else self.width
            end = "\n" if event.kind == "run_finished" else ""
            self.stream.write(f"\r[{'#' * filled}{'.' * (self.width - filled)}] {counts}\x1b[K{end}")
        elif event.kind == "attempt_finished":
            self.stream.write(f"attempt {event.attempt_id}: {event.status}"
                              + (f" ({event.message})" if event.message else "") + f"  [{counts}]\n")
        elif event.kind == "feature_finished":
            self.stream.write(f"feature {event.feature_id}: {event.status}"
                              + (f" ({event.message})" if event.message else "") + "\n")
        elif event.kind == "run_finished":
            self.stream.write(f"run {event.run_id}: {event.status}  [{counts}]\n")
        self.stream.flush()


class NotebookProgress:
    """An ipywidgets bar plus a status line; display ``.widget`` in a notebook cell."""

    def __init__(self) -> None:
        import ipywidgets as widgets

        self.bar = widgets.IntProgress(value=0, min=0, max=1, description="attempts")
        self.label = widgets.Label(value="waiting")
        self.widget: Any = widgets.HBox([self.bar, self.label])
        self._started = time.monotonic()

    def __call__(self, event: ProgressEvent) -> None:
        self.bar.max = max(1, event.total)
        self.bar.value = event.done
        self.bar.bar_style = "success" if event.kind == "run_finished" and event.status == "passed" else (
            "danger" if event.kind == "run_finished" else "info")
        self.label.value = (f"{event.done}/{event.total}  passed {event.passed}  failed {event.failed}  "
                            f"{event.elapsed_s:.0f}s" + (f"  ({event.status})" if event.kind == "run_finished" else ""))

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
