"""Which model tier a feature's attempts run on, and why: one rule for every build.

Precedence: an override (``fibreflow build --model TIER|MODEL_ID``, reason ``override``), then a
tier pinned in the feature list, then the rule of the feature's logical agent in
``models.agent_rules`` (``"agent": "vps-monitor"`` -> haiku), then the router's reading of the
task. Escalation moves on from there (``escalated``). Every attempt stores the tier and the reason
(``attempts.tier``, ``attempts.tier_reason``).

A feature's ``agent`` is either an agent implementation (``claude``, ``command``: who does the
work) or a logical agent with a routing rule (which tier it gets; the build's agent does the
work); ``check_agents`` refuses a name that is neither.
"""

from __future__ import annotations

from collections.abc import Collection

from fibreflow.agents import AGENTS
from fibreflow.build.features import Feature, FeatureList
from fibreflow.errors import ConfigError
from fibreflow.models.routing import ModelRouter, RouteDecision

PINNED = "pinned in the feature list"


def choose_tier(feature: Feature, router: ModelRouter, *, override: RouteDecision | None = None) -> RouteDecision:
    """The tier (and model) of ``feature``'s first attempts, with the reason."""
    if override is not None:
        return override
    if feature.tier is not None:
        return RouteDecision(feature.tier, router.get_model_id(feature.tier), f"{PINNED}: {feature.tier}")
    return router.classify_request(feature.task_description(), feature.agent)


def escalated(router: ModelRouter, tier: str, previous: str | None) -> RouteDecision:
    """The decision of an escalated iteration."""
    return RouteDecision(tier, router.get_model_id(tier), f"escalated from {previous or 'the routed tier'}: "
                                                          "no attempt passed")


def implementation(feature: Feature) -> str | None:
    """The agent implementation the feature names (None: a logical agent, or none: the build's)."""
    return feature.agent if feature.agent in AGENTS else None


def check_agents(features: FeatureList, rules: Collection[str]) -> None:
    """Every feature's ``agent`` is an implementation or has a rule in ``models.agent_rules``; else a
    ConfigError naming the file, the line where known, and the field."""
    for index, feature in enumerate(features):
        if feature.agent is None or feature.agent in AGENTS or feature.agent in rules:
            continue
        raise ConfigError(
            f"feature {feature.id!r}: field 'agent': {feature.agent!r} is neither an agent ({', '.join(sorted(AGENTS))}) "
            f"nor a logical agent with a rule in models.agent_rules (rules: {', '.join(sorted(rules)) or 'none'})",
            path=features.source, line=features.line_of(index, "agent"), key=f"features.{index}.agent")


__all__ = ["PINNED", "check_agents", "choose_tier", "escalated", "implementation"]
