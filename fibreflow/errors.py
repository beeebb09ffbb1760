"""The one exception tree of fibreflow.

    FibreflowError                 root: catch this to catch everything fibreflow raises
    ├── ConfigError                bad or missing configuration (names the file, line, key)
    │   └── MissingEnvError        a ``${VAR}`` in a config value is not set
    ├── StoreError                 the DuckDB store cannot be used
    │   ├── StoreLockTimeout       waited too long for the cross-process lock
    │   ├── ForeignDatabaseError   the file is corrupt, foreign or from a newer fibreflow
    │   └── StoreUnreachable       the store URL is wrong, its server or catalog refuses or is down
    ├── SLAError                   SLA monitoring failed to run (not: an SLA was violated)
    │   ├── ConditionError         an alert condition could not be parsed
    │   └── CheckError             one check could not read its source (status ``error``)
    ├── SLAViolationError          the freshness gate found violations (carries them)
    ├── AlertDeliveryError         an alert could not be delivered (it stays queued)
    ├── SandboxError               a sandbox could not be created, used or cleaned up
    │   └── SandboxUnavailable     a backend is missing (package, binary or key)
    ├── AgentError                 an agent failed outside its own attempt's outcome
    ├── LLMError                   a model call failed for good (after its retries, or not retryable)
    ├── RunnerError                the feature runner could not run (bad feature list, cycle)
    ├── AutopilotError             an autopilot step failed or a run is not in the state asked for
    ├── ReportError                a papermill report failed (names the cell)
    ├── SimulationError            the what-if simulator has no history to calibrate on
    └── BenchmarkError             a benchmark could not run
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class FibreflowError(Exception):
    """Root of every error fibreflow raises on purpose."""


class ConfigError(FibreflowError):
    """Configuration is invalid; the message names the file, line or key at fault."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 key: str | None = None) -> None:
        self.path = path
        self.line = line
        self.key = key
        where = ""
        if path:
            where = f"{path}:{line}: " if line else f"{path}: "
        super().__init__(f"{where}{message}")


class MissingEnvError(ConfigError):
    """A ``${VAR}`` reference names an environment variable that is not set."""

    def __init__(self, var: str, *, path: str | None = None, key: str | None = None) -> None:
        self.var = var
        where = f" (in {key})" if key else ""
        super().__init__(f"environment variable {var} is not set{where}", path=path, key=key)


class StoreError(FibreflowError):
    """The DuckDB store cannot be opened, migrated or written."""


class StoreLockTimeout(StoreError):
    """Another process held the store's lock for longer than the timeout."""


class ForeignDatabaseError(StoreError):
    """The file is not a fibreflow store (corrupt, foreign or newer); it is left untouched."""


class StoreUnreachable(StoreError):
    """The configured store cannot be reached: a mistyped URL, a server that is down, a wrong
    token, a catalog that refuses (a usage error: exit 2; never a fallback to a local file)."""


class SLAError(FibreflowError):
    """SLA monitoring itself failed (distinct from an SLA being violated)."""


class ConditionError(SLAError):
    """An alert condition is not a valid expression; names the offending token and its column."""

    def __init__(self, message: str, *, condition: str | None = None, token: str | None = None,
                 position: int | None = None) -> None:
        self.condition = condition
        self.token = token
        self.position = position
        super().__init__(message)


class CheckError(SLAError):
    """One SLA check could not read its source; the monitor records status ``error`` with this reason."""


class SLAViolationError(FibreflowError):
    """Raised by the freshness gate under ``policy="abort"``; lists every violation."""

    def __init__(self, violations: Sequence[Any]) -> None:
        self.violations = list(violations)
        lines = [
            f"  {getattr(v, 'name', v)}: {getattr(v, 'status', '?')} "
            f"value={getattr(v, 'value', None)} threshold={getattr(v, 'threshold', None)}"
            + (f" ({v.reason})" if getattr(v, "reason", None) else "")
            for v in self.violations
        ]
        super().__init__("data freshness SLAs violated:\n" + "\n".join(lines))


class AlertDeliveryError(FibreflowError):
    """An alert could not be delivered now; it stays in the outbox for a later try."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class SandboxError(FibreflowError):
    """A sandbox could not be created, used or cleaned up."""


class SandboxUnavailable(SandboxError):
    """A sandbox backend is not available here (missing binary, package extra or key)."""


class AgentError(FibreflowError):
    """An agent could not run at all (as opposed to an attempt that failed)."""


class LLMError(FibreflowError):
    """A model call failed for good: retries exhausted, or an error no retry can fix."""

    def __init__(self, message: str, *, status_code: int | None = None, error_type: str | None = None,
                 tries: int = 0) -> None:
        self.status_code = status_code
        self.error_type = error_type
        self.tries = tries
        super().__init__(message)


class RunnerError(FibreflowError):
    """The parallel runner was given something it cannot run."""


class AutopilotError(FibreflowError):
    """An autopilot step failed, or a run is not in the state a command needs; names the step."""

    def __init__(self, message: str, *, step: str | None = None, detail: Any = None) -> None:
        self.step = step
        self.detail = detail
        super().__init__(message)


class ReportError(FibreflowError):
    """A papermill report failed; carries the failing cell."""

    def __init__(self, message: str, *, cell_index: int | None = None, ename: str | None = None,
                 evalue: str | None = None, notebook_path: str | None = None) -> None:
        self.cell_index = cell_index
        self.ename = ename
        self.evalue = evalue
        self.notebook_path = notebook_path  # the executed notebook kept for inspection, if any
        super().__init__(message)


class SimulationError(FibreflowError):
    """The what-if simulator cannot calibrate: the store holds no history in the window."""


class BenchmarkError(FibreflowError):
    """A benchmark could not run."""


__all__ = [
    "AgentError",
    "AlertDeliveryError",
    "AutopilotError",
    "BenchmarkError",
    "CheckError",
    "ConditionError",
    "ConfigError",
    "FibreflowError",
    "ForeignDatabaseError",
    "LLMError",
    "MissingEnvError",
    "ReportError",
    "RunnerError",
    "SLAError",
    "SLAViolationError",
    "SandboxError",
    "SandboxUnavailable",
    "SimulationError",
    "StoreError",
    "StoreUnreachable",
    "StoreLockTimeout",
]
