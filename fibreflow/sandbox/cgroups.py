"""cgroup v1 groups for one sandbox: memory and process limits that hold for root, CPU accounting.

rlimits do not bind root for the process count (RLIMIT_NPROC counts every process of the
uid), and RLIMIT_AS breaks programs that reserve address space, so when the v1 ``memory``,
``pids`` and ``cpuacct`` controllers are writable a sandbox gets its own group in each. Groups
nest under the orchestrator's own group, so a sandbox never leaves the limits its parent is in.
"""

from __future__ import annotations

import functools
import os
import signal
import time
from pathlib import Path

CONTROLLERS = ("memory", "pids", "cpuacct")
# each sandbox's groups sit directly below the orchestrator's own: no shared parent directory
# outlives the sandboxes (it would keep the orchestrator's own group from being removed)
_PREFIX = "fibreflow-"


@functools.lru_cache(maxsize=1)
def _bases() -> dict[str, Path]:
    """This process's own group per controller, where sandbox groups can be made (empty if none)."""
    mounts: dict[str, Path] = {}
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            for line in fh:
                left, _, right = line.partition(" - ")
                fstype, _src, opts = (right.split() + ["", "", ""])[:3]
                if fstype != "cgroup":
                    continue
                for ctrl in CONTROLLERS:
                    if ctrl in opts.split(",") and ctrl not in mounts:
                        mounts[ctrl] = Path(left.split()[4])
        own: dict[str, str] = {}
        with open("/proc/self/cgroup", encoding="utf-8") as fh:
            for line in fh:
                _, ctrls, path = line.rstrip("\n").split(":", 2)
                for ctrl in ctrls.split(","):
                    own[ctrl] = path
    except OSError:
        return {}
    bases: dict[str, Path] = {}
    for ctrl, mount in mounts.items():
        base = mount / own.get(ctrl, "/").lstrip("/")
        probe = base / f"{_PREFIX}probe-{os.getpid()}"
        try:  # writable for real, not just by its mode bits
            probe.mkdir()
            probe.rmdir()
        except OSError:
            continue
        bases[ctrl] = base
    return bases


def available() -> tuple[str, ...]:
    """The controllers sandboxes can use here."""
    return tuple(c for c in CONTROLLERS if c in _bases())


def group_paths(name: str) -> list[Path]:
    """Where the groups of sandbox ``name`` are (or would be) on this machine."""
    return [base / f"{_PREFIX}{name}" for base in _bases().values()]


def _read_int(path: Path, default: int = 0) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def _read_key(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


class CgroupSet:
    """The groups of one sandbox, one per available controller."""

    def __init__(self, paths: dict[str, Path]) -> None:
        self.paths = paths

    @classmethod
    def create(cls, name: str, *, memory_bytes: int, max_pids: int) -> CgroupSet:
        """Make the groups and set their limits; controllers that are not writable are skipped."""
        paths: dict[str, Path] = {}
        try:
            for ctrl, base in _bases().items():
                path = base / f"{_PREFIX}{name}"
                path.mkdir()
                paths[ctrl] = path
            group = cls(paths)
            if "memory" in paths:
                (paths["memory"] / "memory.limit_in_bytes").write_text(str(memory_bytes))
                try:  # with swap, the limit would otherwise only bind resident memory
                    (paths["memory"] / "memory.memsw.limit_in_bytes").write_text(str(memory_bytes))
                except OSError:
                    pass
            if "pids" in paths:
                (paths["pids"] / "pids.max").write_text(str(max_pids))
        except OSError:
            cls(paths).remove()
            raise
        return group

    @classmethod
    def from_paths(cls, paths: dict[str, str]) -> CgroupSet:
        """The groups recorded in a sandbox's registry entry."""
        return cls({ctrl: Path(p) for ctrl, p in paths.items()})

    def join_files(self) -> list[str]:
        """The files a single-threaded process writes ``0`` to in order to join the groups.

        ``tasks`` with ``0`` moves only the calling thread, which lets the kernel skip the global
        threadgroup lock (and its RCU grace period) that a ``cgroup.procs`` write takes: several
        milliseconds per command on a busy machine. The setup shell has one thread, so this moves
        the whole process, and everything it starts is born inside.
        """
        return [str(p / "tasks") for p in self.paths.values()]

    @property
    def has_memory(self) -> bool:
        return "memory" in self.paths

    @property
    def has_pids(self) -> bool:
        return "pids" in self.paths

    def oom_kills(self) -> int:
        """How many processes the memory limit has killed so far."""
        p = self.paths.get("memory")
        return _read_key(p / "memory.oom_control", "oom_kill") if p else 0

    def pids_refused(self) -> int:
        """How many forks the process limit has refused so far."""
        p = self.paths.get("pids")
        return _read_key(p / "pids.events", "max") if p else 0

    def cpu_s(self) -> float | None:
        """CPU seconds used by every process that was in the group."""
        p = self.paths.get("cpuacct")
        return _read_int(p / "cpuacct.usage") / 1e9 if p else None

    def pids(self) -> set[int]:
        """Processes in any of the groups now."""
        found: set[int] = set()
        for path in self.paths.values():
            try:
                found.update(int(x) for x in (path / "cgroup.procs").read_text().split())
            except (OSError, ValueError):
                pass
        return found

    def kill_all(self, *, timeout_s: float = 5.0) -> int:
        """SIGKILL every process in the groups until none is left; returns how many were sent."""
        killed = 0
        deadline = time.monotonic() + timeout_s
        while True:
            pids = self.pids()
            if not pids or time.monotonic() > deadline:
                return killed
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except ProcessLookupError:
                    pass
            time.sleep(0.005)

    def remove(self) -> int:
        """Remove the (empty) groups; returns how many were removed."""
        removed = 0
        for path in self.paths.values():
            for _ in range(100):
                try:
                    path.rmdir()
                    removed += 1
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY while killed processes are still exiting
                    time.sleep(0.01)
        return removed
