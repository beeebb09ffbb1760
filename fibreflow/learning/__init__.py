"""Learning from failed attempts: failure analysis and the DuckDB-backed knowledge base.

``analyze_failure`` reads the evidence of a real run; ``FailureKnowledgeBase`` stores what it
finds, deduplicated by signature, hands the most useful patterns to the next attempts and
measures whether they helped.
"""

from __future__ import annotations

from fibreflow.learning.analysis import FAMILIES, FailureAnalysis, analyze_failure, normalize_message
from fibreflow.learning.attempt import AgentAttempt
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
