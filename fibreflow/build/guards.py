"""What may stop a build before an attempt starts: the data gate and the budget guard.

Both are given to ``ParallelRunner`` as typed callables, made above this layer (the CLI makes
them from ``fibreflow.sla``: the SLA checks and the SLA alert path sit above the build). The
runner only asks and records the answer:

- ``DataGate(feature) -> GateDecision``: before the attempts of a feature that declares
  ``needs_data``; ``proceed=False`` blocks the feature, and the decision with its violations is
  stored on the feature's row either way.
- ``BudgetGuard.allow(tier, running) -> str | None``: before every attempt; a reason means the
  next attempt would cross a spending limit, so the run starts no more attempts and says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from fibreflow.build.features import Feature


@dataclass(frozen=True)
class GateDecision:
    """The data gate's answer for one feature.

    ``decision``: ``fresh`` (every SLA met), ``warned`` (violations, policy ``warn``), ``proceeded``
    or ``declined`` (violations, policy ``ask``: what the person answered), ``aborted`` (violations,
    policy ``abort``, or ``ask`` with no terminal to ask on)."""

    proceed: bool
    decision: str
    policy: str
    violations: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The JSON shown with the feature (``--json``)."""
        return {"decision": self.decision, "policy": self.policy, "violations": list(self.violations)}


class DataGate(Protocol):
    """Checks the freshness of the data a feature needs (its ``needs_data`` SLAs)."""

    def __call__(self, feature: Feature) -> GateDecision: ...


class BudgetGuard(Protocol):
    """Tells whether one more attempt fits the spending limits."""

    def allow(self, tier: str | None, running: int) -> str | None:
        """None when one more attempt on ``tier`` fits (with ``running`` attempts under way), else
        the reason it does not."""
        ...


__all__ = ["BudgetGuard", "DataGate", "GateDecision"]
