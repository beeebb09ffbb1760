"""Learning analytics: knowledge-base growth, success rate per iteration, the top failure
patterns and what to fix next, from ``learned_patterns``, ``pattern_events`` and ``attempts``."""

from __future__ import annotations

from typing import Any

import ipywidgets as widgets

from fibreflow.learning import views
from fibreflow.learning.report import load_learning_data
from fibreflow.store import Store
from fibreflow.twin.base import FilterState, Panel, html_list, row, window


class LearningPanel(Panel):
    """Is the knowledge base making attempts better, and which mistakes still cost the most?"""

    title = "Learning analytics"
    css = "learning"
    tables = ("learned_patterns", "pattern_events", "attempts")

    def __init__(self, store: Store, **kwargs: Any) -> None:
        super().__init__(store, **kwargs)
        self.suggestions = widgets.HTML()
        self.suggestions.add_class("ff-suggestions")
        self.children = [self._error_line, row(self.figure("growth", 340), self.figure("iterations", 340)),
                         self.figure("patterns", 420), self.suggestions]

    def load(self, state: FilterState) -> dict[str, Any]:
        start, end = window(self.store, FilterState(state.days))
        return load_learning_data(self.store, start=start, end=end, agent=state.agent, run_id=state.run_id)

    def render(self, data: dict[str, Any]) -> None:
        self.show("growth", views.growth_figure, data["first_seen"], data["failures"], data["start"])
        self.show("iterations", views.iterations_figure, data["iterations"])
        self.show("patterns", views.patterns_figure, data["patterns"])
        self.suggestions.value = html_list("What to fix next", data["suggestions"],
                                           empty="no failures recorded in this range")
