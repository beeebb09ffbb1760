"""Behavioural agreement between attempts: what each did on one shared pool of inputs.

The pool is the feature's own tests plus the tests the attempts wrote (and, where inputs can be
derived, more inputs): every candidate runs all of it, and candidates are compared by what they
did, not by how their code looks. Attempts that behave the same form a cluster; a cluster's
support grows with its size and with the pool tests its members pass (CodeT's dual agreement).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

ERROR = "!error"


@dataclass(frozen=True)
class Behaviour:
    """Per attempt id: the outcome signature on each pool item (a result's repr, a test verdict,
    an exception) and, optionally, which pool tests it passed and how much each test counts."""

    outcomes: Mapping[str, Sequence[str]]
    pool_tests: Mapping[str, Sequence[bool]] = field(default_factory=dict)
    test_weights: Sequence[float] | None = None

    def signature(self, attempt_id: str) -> tuple[str, ...]:
        """The attempt's outcomes with every exception folded into one: how valid programs fail on
        out-of-contract input (ValueError or IndexError) is not a difference in behaviour."""
        return tuple(ERROR if o.startswith("!") and o != "!Timeout" else o
                     for o in self.outcomes.get(attempt_id, ()))

    def tests_score(self, attempt_id: str) -> float:
        """Weighted count of the pool tests the attempt passed."""
        passed = self.pool_tests.get(attempt_id, ())
        weights = self.test_weights or [1.0] * len(passed)
        return float(sum(w for ok, w in zip(passed, weights, strict=False) if ok))


def clusters(behaviour: Behaviour, attempt_ids: Sequence[str]) -> list[list[str]]:
    """Attempts grouped by identical behaviour, in first-seen order."""
    groups: dict[tuple[str, ...], list[str]] = {}
    for aid in attempt_ids:
        groups.setdefault(behaviour.signature(aid), []).append(aid)
    return list(groups.values())


def cluster_support(behaviour: Behaviour, attempt_ids: Sequence[str], *,
                    size_exponent: float = 0.5) -> dict[str, float]:
    """Each attempt's support: ``size ** size_exponent * (1 + tests passed)`` of its cluster.
    A square root on the size keeps a big cluster of a shared misreading of the task from
    outvoting a smaller one that passes clearly more of the pool's tests."""
    support: dict[str, float] = {}
    for group in clusters(behaviour, attempt_ids):
        value = len(group) ** size_exponent * (1.0 + behaviour.tests_score(group[0]))
        support.update({aid: value for aid in group})
    return support


def unanimity(behaviour: Behaviour, attempt_ids: Sequence[str]) -> float:
    """Share of pool items on which all the given attempts did the same (1.0 for fewer than two)."""
    sigs = [behaviour.signature(a) for a in attempt_ids]
    if len(sigs) < 2:
        return 1.0
    n = min(len(s) for s in sigs)
    if n == 0:
        return 0.0
    return sum(1 for k in range(n) if len({s[k] for s in sigs}) == 1) / n


def diff_similarity(diffs: Sequence[str]) -> float:
    """The least pairwise similarity of the added lines of several diffs (whitespace ignored)."""
    def added(d: str) -> list[str]:
        return [" ".join(line[1:].split()) for line in d.splitlines()
                if line.startswith("+") and not line.startswith("+++") and line[1:].strip()]

    bodies = [added(d) for d in diffs]
    if len(bodies) < 2:
        return 1.0
    return min(difflib.SequenceMatcher(None, a, b).ratio()
               for i, a in enumerate(bodies) for b in bodies[i + 1:])
