"""``AutopilotOptions``: what one autopilot run is asked to do, stored with the run.

``run_autopilot`` resolves the options against the settings (a field left ``None`` takes its
setting, so a later change of the settings does not change a run already started) and stores
them in ``autopilot_runs.options`` as JSON, one key per field, so ``--resume`` continues the
very same run from its row alone. A row written before a field existed reads that field as its
default; a key this version does not know is ignored.

The options are only what a run's steps read back: where the repository is, the run id, the
store, the settings and the progress callbacks are arguments of ``run_autopilot`` itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fibreflow.errors import ConfigError

if TYPE_CHECKING:
    from fibreflow.config import Settings


@dataclass(frozen=True)
class AutopilotOptions:
    """The options of one autopilot run (``None``: the setting named in the field's docstring)."""

    attempts: int | None = None
    """Attempts per feature; ``autopilot.attempts`` when None."""

    workers: int | None = None
    """Attempts at once; ``autopilot.workers`` when None, then the backend's default."""

    agent: str = "claude"
    """The agent by name: ``claude`` (a model in the loop) or ``command`` (``agent_command``)."""

    agent_command: str | None = None
    """For the ``command`` agent: the shell command each sandbox runs (no secret values: it is stored)."""

    agent_timeout: float | None = None
    """Seconds an agent may run; the profile's wall timeout when None."""

    agent_script: str | None = None
    """With ``offline``: the scripted conversation of the ``claude`` agent (a name or a file)."""

    offline: bool = False
    """Use the scripted model instead of the API for the ``claude`` agent and the decomposition."""

    decompose_script: str | None = None
    """With ``offline``: the scripted reply to the decomposition call; without one, the goal is one feature."""

    backend: str | None = None
    """Sandbox backend (``local`` or ``e2b``); ``sandbox.backend`` when None."""

    profile: str | None = None
    """Sandbox profile; ``sandbox.profile`` when None."""

    test_command: str | None = None
    """Test command for a goal, or for features that name none."""

    coverage_floor: float | None = None
    """Least coverage (0..1) a winner needs; ``selection.coverage_floor`` when None (resolved at selection)."""

    dirty: tuple[str, ...] = ()
    """Set by ``run_autopilot``: files with uncommitted changes when the run started, which the
    build (from the base commit) does not see."""

    features_path: str | Path | None = None
    """A feature list to build instead of decomposing the goal (stored as an absolute path)."""

    model: str | None = None
    """A tier or model ID every attempt runs on, whatever the routing (``--model``; tier reason ``override``)."""

    data_policy: str = "ask"
    """When a feature's ``needs_data`` SLAs are not met: ``warn``, ``abort`` or ``ask`` (abort without a terminal)."""

    no_deploy: bool = False
    """End the run at the committed branches (after the whole test suite): no SLA gate, staging,
    smoke checks or approval request, so none of their settings is needed (``--no-deploy``)."""

    def resolved(self, settings: Settings) -> AutopilotOptions:
        """These options with every default taken from ``settings``, validated; a bad value is a
        ConfigError naming its key."""
        attempts = self.attempts if self.attempts is not None else settings.autopilot.attempts
        if attempts < 1:
            raise ConfigError(f"attempts must be at least 1, got {attempts}", key="attempts")
        floor = self.coverage_floor
        if floor is not None and not 0 <= floor <= 1:
            raise ConfigError(f"coverage_floor must be between 0 and 1, got {floor}", key="coverage_floor")
        workers = self.workers if self.workers is not None else settings.autopilot.workers
        features = str(Path(self.features_path).resolve()) if self.features_path is not None else None
        return dataclasses.replace(self, attempts=attempts, workers=workers, features_path=features,
                                   backend=self.backend or settings.sandbox.backend,
                                   profile=self.profile or settings.sandbox.profile)

    def to_dict(self) -> dict[str, Any]:
        """The JSON stored in ``autopilot_runs.options`` (and shown as a run's ``options``)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["dirty"] = list(self.dirty)
        if self.features_path is not None:
            out["features_path"] = str(self.features_path)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AutopilotOptions:
        """The options a run stored (keys this version does not know are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        known = {k: v for k, v in (data or {}).items() if k in names}
        if "dirty" in known:
            known["dirty"] = tuple(known["dirty"] or ())
        return cls(**known)


__all__ = ["AutopilotOptions"]
