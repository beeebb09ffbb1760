"""The tier ladder behind the runner's ``escalate`` hook: a feature starts at the tier the router
picks for it (or the one it pins), and moves one tier up only when no attempt of the current tier
passed its tests, never above the ceiling. Cost per solved feature is what it saves: most
features never pay for the top tier."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from fibreflow.build.attempt import FeatureResult
from fibreflow.build.features import Feature, FeatureList
from fibreflow.config import TIERS
from fibreflow.errors import ConfigError
from fibreflow.models.routing import ModelRouter


class TierLadder:
    """``escalate(feature, result)`` for ``ParallelRunner``, and the start tier of each feature."""

    def __init__(self, ceiling: str = TIERS[-1], *, router: ModelRouter | None = None,
                 tiers: Sequence[str] = TIERS) -> None:
        if ceiling not in tiers:
            raise ConfigError(f"escalation ceiling {ceiling!r} is not a tier (known: {', '.join(tiers)})",
                              key="escalate_to")
        self.tiers = list(tiers)
        self.ceiling = ceiling
        self.router = router

    def start(self, features: FeatureList) -> FeatureList:
        """The features with their start tier pinned: their own, else the router's choice."""
        router = self.router or ModelRouter()
        started = [f if f.tier else dataclasses.replace(
            f, tier=router.classify_request(f.task_description(), f.agent).tier)
                   for f in features]
        return FeatureList(tuple(started), goal=features.goal, source=features.source)

    def __call__(self, feature: Feature, result: FeatureResult) -> str | None:
        if not result.attempts:
            return None
        last = max(a.iteration for a in result.attempts)
        used = [a.tier for a in result.attempts if a.iteration == last and a.tier in self.tiers]
        if not used:
            return None
        step = max(self.tiers.index(t) for t in used) + 1
        return self.tiers[step] if step <= self.tiers.index(self.ceiling) else None
