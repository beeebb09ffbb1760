"""The SLA gate before agents: ``require_fresh_data`` on the SLAs a feature ``needs_data``.

``FreshDataGate`` is the build's ``DataGate`` (``fibreflow.build.guards``); the CLI makes it and
hands it to the runner, which sits below this layer. Policies:

- ``warn``: violations are recorded on the feature, its attempts go ahead;
- ``abort``: violations block the feature (its dependents are skipped);
- ``ask``: on a terminal, "Proceed? (y/n)" decides; where no terminal is attached, ``abort``.

The checks run and are stored like any SLA cycle (``sla_checks``); no alert is sent.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Literal

from fibreflow.build.features import Feature, FeatureList
from fibreflow.build.guards import GateDecision
from fibreflow.errors import ConfigError, SLAViolationError
from fibreflow.sla.config import SLAConfig
from fibreflow.sla.monitor import require_fresh_data
from fibreflow.store import Store

Policy = Literal["warn", "abort", "ask"]
POLICIES: tuple[Policy, ...] = ("warn", "abort", "ask")


def ask_on_terminal(question: str) -> bool | None:
    """The person's answer to ``question`` on the terminal; None when no terminal is attached."""
    if not (sys.stdin.isatty() and sys.stderr.isatty()):
        return None
    while True:
        print(question, end=" ", file=sys.stderr, flush=True)
        answer = sys.stdin.readline().strip().lower()
        if answer in ("y", "yes"):
            return True
        if answer in ("n", "no", ""):
            return False


class FreshDataGate:
    """Runs the freshness checks of a feature's ``needs_data`` and decides by ``policy``."""

    def __init__(self, config: SLAConfig, *, store: Store, policy: Policy = "ask",
                 ask: Callable[[str], bool | None] = ask_on_terminal) -> None:
        if policy not in POLICIES:
            raise ConfigError(f"data gate policy must be one of {', '.join(POLICIES)}, not {policy!r}",
                              key="--data-policy")
        self.config, self.store, self.policy, self.ask = config, store, policy, ask

    def __call__(self, feature: Feature) -> GateDecision:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                require_fresh_data(feature.needs_data, "abort", config=self.config, store=self.store)
            except SLAViolationError as exc:
                violations = tuple(f"{v.name}: {v.status}" + (f" ({v.reason})" if getattr(v, "reason", None) else "")
                                   for v in exc.violations)
            else:
                return GateDecision(True, "fresh", self.policy)
        if self.policy == "warn":
            return GateDecision(True, "warned", self.policy, violations)
        if self.policy == "ask":
            answer = self.ask(f"feature {feature.id}: the data it needs is not fresh ({'; '.join(violations)}). "
                              "Proceed? (y/n)")
            if answer is not None:
                return GateDecision(answer, "proceeded" if answer else "declined", self.policy, violations)
            return GateDecision(False, "aborted", self.policy, (*violations, "no terminal to ask on: aborted"))
        return GateDecision(False, "aborted", self.policy, violations)


def check_needs_data(features: FeatureList, config: SLAConfig | None, *, config_path: str) -> None:
    """Every ``needs_data`` name is an SLA of ``config``; else a ConfigError naming the feature list's
    file, line and field, the unknown name and the SLA file."""
    known = set(config.checks) if config is not None else set()
    for index, feature in enumerate(features):
        unknown = [n for n in feature.needs_data if n not in known]
        if unknown:
            listed = ", ".join(sorted(known)) if known else f"none: no SLA file at {config_path}"
            raise ConfigError(f"feature {feature.id!r}: field 'needs_data': unknown SLA {unknown[0]!r} "
                              f"(SLAs in {config_path}: {listed})", path=features.source,
                              line=features.line_of(index, "needs_data"), key=f"features.{index}.needs_data")


def needed(features: Iterable[Feature]) -> bool:
    """Whether any feature declares ``needs_data``."""
    return any(f.needs_data for f in features)


__all__ = ["POLICIES", "FreshDataGate", "Policy", "ask_on_terminal", "check_needs_data", "needed"]
