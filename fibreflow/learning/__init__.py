"""Learning from failed attempts: failure analysis and the DuckDB-backed knowledge base.

``analyze_failure`` reads the evidence of a real run; ``FailureKnowledgeBase`` stores what it
finds, deduplicated by signature, hands the most useful patterns to the next attempts and
measures whether they helped.

Modules: ``evidence`` (what a run left behind), ``analysis`` (what went wrong), ``knowledge``
(the pattern store), ``credit`` (which attempts a pattern may take credit for), ``stats`` (``fibreflow learn stats``), ``report`` and ``views`` (the learning
report's data and figures). ``AgentAttempt`` and ``FailureAnalysis`` are the runner's record and
its analysis slot from ``fibreflow.build.attempt``, re-exported because learning is where most
callers meet them.
"""

from __future__ import annotations

from fibreflow.build.attempt import AgentAttempt, FailureAnalysis
from fibreflow.learning.analysis import FAMILIES, analyze_failure, normalize_message
from fibreflow.learning.evidence import Evidence, evidence_of
from fibreflow.learning.knowledge import FailureKnowledgeBase, Learning, LearningContext
from fibreflow.learning.stats import learning_stats

__all__ = [
    "FAMILIES",
    "AgentAttempt",
    "Evidence",
    "FailureAnalysis",
    "FailureKnowledgeBase",
    "Learning",
    "LearningContext",
    "analyze_failure",
    "evidence_of",
    "learning_stats",
    "normalize_message",
]
