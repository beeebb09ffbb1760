"""Best-of-N selection: scoring, behavioural consensus and the choice of a winner.

``select_best(attempts)`` ranks attempts (passing tests first, then behavioural support, then
the weighted score from config), checks that the top ones agree on a shared pool, and flags the
selection for human review when they do not.

Modules: ``selector`` (scores, ranking, consensus, the winner), ``behaviour`` (agreement on a
shared pool), ``quality`` (ruff findings per changed line) and ``pool`` (the shared test pool run
in each attempt's sandbox). An attempt "passes its tests" exactly when ``AgentAttempt.passed``
(``fibreflow.build.attempt``) says so, the verdict the runner recorded, so selection never
ships an attempt the runner failed.
"""

from __future__ import annotations

from fibreflow.build.attempt import AgentAttempt
from fibreflow.selection.behaviour import Behaviour, cluster_support, clusters, diff_similarity, unanimity
from fibreflow.selection.quality import changed_lines, code_quality
from fibreflow.selection.selector import (
    AttemptScore,
    BehaviourRunner,
    BestOfNSelector,
    Consensus,
    Selection,
    select_best,
    validate_consensus,
)

__all__ = [
    "AgentAttempt",
    "AttemptScore",
    "Behaviour",
    "BehaviourRunner",
    "BestOfNSelector",
    "Consensus",
    "Selection",
    "changed_lines",
    "cluster_support",
    "clusters",
    "code_quality",
    "diff_similarity",
    "select_best",
    "unanimity",
    "validate_consensus",
]
