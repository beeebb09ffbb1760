"""The Sandbox protocol every backend implements, and the records it returns.

Reaping is part of the backend protocol, not a capability probed with ``getattr``: the runner
asks every backend, before and after a run, to kill what finished runs left running; a backend
with nothing of the kind to kill says so by returning no ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from fibreflow.store.discovery import COMPANION_SUFFIXES

if TYPE_CHECKING:
    from fibreflow.store import StoreReader


@dataclass(frozen=True)
class SandboxProfile:
    """Limits for one sandbox; loaded from ``fibreflow/sandbox/profiles.yaml``."""

    name: str
    wall_timeout_s: float = 300.0
    cpu_time_s: int = 600
    memory_mb: int = 2048
    max_processes: int = 256
    max_file_size_mb: int = 512
    disk_mb: int = 1024
    """What the attempt may write in all (its workspace changes); see ``fibreflow.sandbox.disk``."""
    network: bool = False
    env_passthrough: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    description: str = ""


def store_files(db_path: str | Path) -> list[Path]:
    """A store file and what DuckDB and fibreflow keep beside it (WAL, lock, temp directory, a
    store server's record and token file): what every backend keeps out of its sandboxes."""
    db = Path(db_path).expanduser().resolve()
    return [db, *(db.with_name(db.name + suffix) for suffix in COMPANION_SUFFIXES)]


@dataclass(frozen=True)
class CommandResult:
    """What one command in a sandbox did."""

    exit_code: int
    stdout: str
    stderr: str
    duration_s: float
    killed: bool = False
    killed_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.killed


@runtime_checkable
class Sandbox(Protocol):
    """An isolated copy of a repository where one attempt runs. Agents only touch this."""

    id: str
    backend: str
    profile: SandboxProfile

    def run(self, cmd: str | list[str], *, timeout: float | None = None,
            env: Mapping[str, str] | None = None) -> CommandResult: ...

    def write_files(self, files: Mapping[str, str | bytes]) -> None: ...

    def read_file(self, path: str) -> str: ...

    def diff(self) -> str: ...

    def close(self) -> None: ...

    def __enter__(self) -> Sandbox: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class SandboxBackend(Protocol):
    """Creates sandboxes of one kind."""

    name: str

    def create(self, repo: Path, profile: SandboxProfile, *, labels: Mapping[str, str] | None = None) -> Sandbox: ...

    def reap_finished_runs(self, store: StoreReader | None = None) -> list[str]:
        """Kill this backend's sandboxes whose run is no longer ``running`` in ``store`` (the
        configured store when None); returns their ids."""
        ...
