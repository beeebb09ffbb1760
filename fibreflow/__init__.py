"""FibreFlow: an operations workbench for autonomous coding agents.

The public API is importable from here; each name loads its module on first use, so
``import fibreflow`` (and the CLI's start) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# name -> module that defines it
_EXPORTS: dict[str, str] = {
    "AgentAttempt": "fibreflow.build.attempt",
    "AttemptOutcome": "fibreflow.agents",
    "AttemptTask": "fibreflow.agents",
    "AutopilotOptions": "fibreflow.autopilot",
    "BatchWriter": "fibreflow.store",
    "BestOfNSelector": "fibreflow.selection",
    "ConfigError": "fibreflow.errors",
    "FailureKnowledgeBase": "fibreflow.learning",
    "FibreflowError": "fibreflow.errors",
    "LLMClient": "fibreflow.models.client",
    "ModelRouter": "fibreflow.models.routing",
    "ParallelRunner": "fibreflow.build.runner",
    "SLAMonitor": "fibreflow.sla.monitor",
    "SLAViolationError": "fibreflow.errors",
    "SandboxError": "fibreflow.errors",
    "SandboxManager": "fibreflow.sandbox.manager",
    "ScenarioResult": "fibreflow.simulation.engine",
    "Settings": "fibreflow.config",
    "Store": "fibreflow.store",
    "StoreError": "fibreflow.errors",
    "analyze_failure": "fibreflow.learning",
    "approve_run": "fibreflow.autopilot",
    "get_agent": "fibreflow.agents",
    "load_settings": "fibreflow.config",
    "load_sla_config": "fibreflow.sla.config",
    "open_store": "fibreflow.store",
    "optimize_model_routing": "fibreflow.simulation.engine",
    "plan_capacity": "fibreflow.simulation.engine",
    "reject_run": "fibreflow.autopilot",
    "require_fresh_data": "fibreflow.sla.monitor",
    "resume_autopilot": "fibreflow.autopilot",
    "run_autopilot": "fibreflow.autopilot",
    "run_report": "fibreflow.reporting.runner",
    "select_best": "fibreflow.selection",
    "simulate_add_agents": "fibreflow.simulation.engine",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'fibreflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
