"""The registry of live local sandboxes, and the reaper of those a dead process left behind.

Each sandbox owns ``<state_dir>/sandboxes/<id>/`` with an ``owner.json`` naming the process
that created it (pid plus start time, so a recycled pid is not mistaken for the owner), its
cgroups and its layers. When an orchestrator is killed with SIGKILL its sandboxes' processes
die with it (bubblewrap's ``--die-with-parent``), but directories, layers and cgroups remain;
``reap_orphans`` reclaims them the next time a backend starts.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fibreflow.sandbox.cgroups import CgroupSet, group_paths

log = logging.getLogger(__name__)

OWNER_FILE = "owner.json"
MARKER_ENV = "FIBREFLOW_SANDBOX"
# A directory without owner.json younger than this may be a sandbox being created right now.
_UNREGISTERED_GRACE_S = 60.0


def proc_start_time(pid: int) -> int | None:
    """The start time of a process in clock ticks since boot, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    # the command name is in parentheses and may contain spaces: split after the last ')'
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


_start_times: dict[int, int | None] = {}


def owner_record() -> dict[str, Any]:
    """Who owns sandboxes created by this process (pid and start time)."""
    pid = os.getpid()
    if pid not in _start_times:  # keyed by pid so a forked child records itself, not its parent
        _start_times[pid] = proc_start_time(pid)
    return {"owner_pid": pid, "owner_start": _start_times[pid]}


def owner_alive(record: dict[str, Any]) -> bool:
    """Whether the process that created a sandbox still runs."""
    pid = record.get("owner_pid")
    if not isinstance(pid, int):
        return False
    start = proc_start_time(pid)
    return start is not None and (record.get("owner_start") in (None, start))


def register(directory: Path, record: dict[str, Any]) -> None:
    """Write a sandbox's registry entry (atomically: a reader never sees half a file)."""
    tmp = directory / (OWNER_FILE + ".tmp")
    tmp.write_text(json.dumps(record, default=str))
    os.replace(tmp, directory / OWNER_FILE)


def read_record(directory: Path) -> dict[str, Any] | None:
    """A sandbox's registry entry, or None if it has none (yet) or it is unreadable."""
    try:
        data = json.loads((directory / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _proc_entries(name: str) -> Iterator[tuple[int, list[bytes]]]:
    """``(pid, NUL-separated fields of /proc/PID/<name>)`` of every other process still readable."""
    me = os.getpid()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            with open(f"/proc/{entry.name}/{name}", "rb") as fh:
                data = fh.read()
        except OSError:
            continue
        yield int(entry.name), data.split(b"\0")


def processes_with_marker(sandbox_ids: set[str]) -> set[int]:
    """Processes whose environment carries the marker of one of these sandboxes."""
    if not sandbox_ids:
        return set()
    needles = {f"{MARKER_ENV}={sid}".encode() for sid in sandbox_ids}
    return {pid for pid, env in _proc_entries("environ") if any(needle in env for needle in needles)}


def processes_with_argument(marker: str, *, argv0: bool = False) -> list[int]:
    """Other processes whose command line (``argv0``: whose first argument) contains ``marker``;
    how tests and benchmarks find the commands they started under ``exec -a MARKER``."""
    needle = marker.encode()
    return [pid for pid, argv in _proc_entries("cmdline")
            if needle in (argv[0] if argv0 else b"\0".join(argv))]


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this process's mount namespace, deepest first."""
    prefix = str(path).rstrip("/") + "/"
    points: list[str] = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as fh:
            for line in fh:
                point = line.split()[4].replace("\\040", " ")
                if point == prefix.rstrip("/") or point.startswith(prefix):
                    points.append(point)
    except OSError:
        pass
    return sorted(points, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """Delete a sandbox directory, whatever modes its contents were left with."""
    def onerror(func: Any, target: str, exc_info: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
        with contextlib.suppress(FileNotFoundError):
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            else:
                os.unlink(target)

    shutil.rmtree(path, onerror=onerror)


class _Janitor:
    """Deletes closed sandboxes' directories in the background, one thread per process.

    Freeing a sandbox's directories costs milliseconds on some filesystems (ext4 with
    ``discard`` frees every block synchronously); nothing in the directory is live any more
    when it is queued (processes killed, cgroups removed, the overlay was only ever mounted in
    namespaces that are gone), so ``close()`` need not wait. ``drain()`` waits; it also runs
    at interpreter exit, and a crash leaves the directory to the reaper (its owner.json stays).
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # also after fork: the child has no janitor thread, so it must not wait for the parent's queue
        self._queue: queue.Queue[Path] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._guard = threading.Lock()

    def remove(self, directory: Path) -> None:
        """Rename ``directory`` out of the way (cheap) and delete it in the background."""
        doomed = directory.with_name(f".closing-{directory.name}")
        try:
            os.rename(directory, doomed)
        except OSError:
            remove_tree(directory)
            return
        with self._guard:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="fibreflow-sandbox-janitor", daemon=True)
                self._thread.start()
        self._queue.put(doomed)

    def _loop(self) -> None:
        while True:
            path = self._queue.get()
            try:
                remove_tree(path)
            except OSError as exc:  # the reaper tries again when the owner is gone
                log.warning("could not remove sandbox directory %s: %s", path, exc)
            finally:
                self._queue.task_done()

    def drain(self) -> None:
        """Wait until every queued directory is deleted."""
        self._queue.join()


janitor = _Janitor()
atexit.register(janitor.drain)
os.register_at_fork(after_in_child=janitor._reset)


@dataclass
class ReapReport:
    """What one reaper pass reclaimed."""

    sandboxes: list[str] = field(default_factory=list)
    processes_killed: int = 0
    mounts_removed: int = 0
    cgroups_removed: int = 0
    dirs_removed: int = 0
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"sandboxes": self.sandboxes, "processes_killed": self.processes_killed,
                "mounts_removed": self.mounts_removed, "cgroups_removed": self.cgroups_removed,
                "dirs_removed": self.dirs_removed, "errors": self.errors}


def reclaim(directory: Path, record: dict[str, Any] | None, report: ReapReport) -> None:
    """Kill, unmount and delete everything of one sandbox."""
    sid = (record or {}).get("id") or directory.name
    recorded = (record or {}).get("cgroups")
    # no record: the owner died between making its groups and registering them
    groups = CgroupSet.from_paths(recorded) if recorded else CgroupSet.from_paths(
        {str(i): str(p) for i, p in enumerate(group_paths(sid)) if p.exists()})
    report.processes_killed += groups.kill_all()
    stragglers = processes_with_marker({sid})
    for pid in stragglers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
            report.processes_killed += 1
    for point in mounts_under(directory):
        rc = subprocess.run(["umount", "-l", point], capture_output=True).returncode
        if rc == 0:
            report.mounts_removed += 1
        else:
            report.errors.append(f"{sid}: could not unmount {point}")
    report.cgroups_removed += groups.remove()
    try:
        remove_tree(directory)
        report.dirs_removed += 1
    except OSError as exc:
        report.errors.append(f"{sid}: could not remove {directory}: {exc.strerror}")
    report.sandboxes.append(sid)


def reap_orphans(root: Path) -> ReapReport:
    """Reclaim every sandbox under ``root`` whose owner process is gone."""
    report = ReapReport()
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return report
    for entry in entries:
        if not entry.is_dir(follow_symlinks=False):
            continue
        directory = Path(entry.path)
        record = read_record(directory)
        if record is None:
            try:
                age = time.time() - entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:
                continue
            if age < _UNREGISTERED_GRACE_S:
                continue
        elif owner_alive(record):
            continue
        log.warning("reaping sandbox %s left by dead process %s", directory.name,
                    (record or {}).get("owner_pid", "?"))
        reclaim(directory, record, report)
    return report
