"""FibreFlow: an operations workbench for autonomous coding agents."""

from __future__ import annotations

from fibreflow.config import Settings, load_settings
from fibreflow.errors import (
    ConfigError,
    FibreflowError,
    SandboxError,
    SLAViolationError,
    StoreError,
)
from fibreflow.store import BatchWriter, Store, open_store

__version__ = "0.1.0"

__all__ = [
    "BatchWriter",
    "ConfigError",
    "FibreflowError",
    "SLAViolationError",
    "SandboxError",
    "Settings",
    "Store",
    "StoreError",
    "__version__",
    "load_settings",
    "open_store",
]
