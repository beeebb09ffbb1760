"""Launching one command in a local sandbox: the setup script, waiting, and why it ended.

Every command starts as ``[unshare -m] sh -c SCRIPT sh bwrap ... -- CMD``; the script joins
the sandbox's cgroups, sets rlimits, mounts the overlay (in the private mount namespace
``unshare`` made) and then execs bubblewrap, so no Python runs between fork and the sandbox
(no ``preexec_fn``: worker threads make that unsafe) and no extra process stays around.
"""

from __future__ import annotations

import os
import select
import shlex
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fibreflow.sandbox.base import SandboxProfile
from fibreflow.sandbox.cgroups import CgroupSet
from fibreflow.sandbox.isolation import OVERLAY_OPTIONS

SETUP_FAILED = 125
SETUP_MARK = "fibreflow-sandbox:"
MAX_OUTPUT = 4 << 20
CHECK_EVERY_S = 0.05  # how often a running command is checked against the process and CPU limits
FATAL_SIGNALS = {signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGILL, signal.SIGABRT,
                 signal.SIGBUS, signal.SIGFPE, signal.SIGKILL, signal.SIGSEGV, signal.SIGTERM}
BASH = shutil.which("bash") or "/bin/sh"


def setup_script(*, directory: Path, profile: SandboxProfile, cgroups: CgroupSet, overlay: bool, copy: bool,
                 repo: Path) -> str:
    """The shell script that prepares a command's process and then execs its arguments."""
    p = profile
    q = shlex.quote
    fail = f"exit {SETUP_FAILED}"
    lines = [f"cd {q(str(directory))} || {fail}"]
    for tasks in cgroups.join_files():
        lines.append(f"echo 0 > {q(tasks)} || {{ echo '{SETUP_MARK} cannot join cgroup {tasks}' >&2; {fail}; }}")
    lines.append("ulimit -c 0")
    lines.append(f"ulimit -S -t {p.cpu_time_s}; ulimit -H -t {p.cpu_time_s + 5}")
    lines.append(f"ulimit -f {p.max_file_size_mb * 2048}")  # 512-byte blocks in POSIX sh
    if not cgroups.has_memory:
        lines.append(f"ulimit -v {p.memory_mb * 1024}")
    if not cgroups.has_pids and os.geteuid() != 0:  # RLIMIT_NPROC does not bind root
        lines.append(f"ulimit -u {p.max_processes}")
    if overlay:
        lines.append(f"mount -t overlay overlay -o {OVERLAY_OPTIONS} merged || "
                     f"{{ echo '{SETUP_MARK} overlay mount of {q(str(repo))} failed' >&2; {fail}; }}")
    elif copy:
        lines.append(f"cd workspace || {fail}")
    lines.append('exec "$@"')
    return "\n".join(lines)


def setup_failed(code: int, stderr: str) -> bool:
    """Whether the command never started (the script or bubblewrap itself failed)."""
    return (code == SETUP_FAILED and stderr.startswith(SETUP_MARK)) or \
        (code == 1 and stderr.startswith("bwrap: "))


def read_output(path: Path) -> str:
    """A command's output file as text, its last ``MAX_OUTPUT`` bytes if it is longer."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if size <= MAX_OUTPUT:
            data = fh.read()
            prefix = b""
        else:  # keep the end, where tracebacks and summaries are
            fh.seek(size - MAX_OUTPUT)
            data = fh.read()
            prefix = f"[fibreflow: first {size - MAX_OUTPUT} bytes of output cut]\n".encode()
    return (prefix + data).decode("utf-8", errors="replace")


def wait_for(pid: int, deadline: float, over_limit: Callable[[], str | None],
          kill: Callable[[], None]) -> tuple[int, Any, str | None]:
    """Wait for ``pid``; kill it at ``deadline`` or when a limit trips. Returns (status, rusage, reason)."""
    try:  # wakes the moment the process exits, instead of polling on a timer
        fd: int | None = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    poller = select.poll()
    if fd is not None:
        poller.register(fd, select.POLLIN)
    reason = None
    next_check = time.monotonic() + CHECK_EVERY_S
    try:
        while True:
            done, status, usage = os.wait4(pid, os.WNOHANG)
            if done:
                return status, usage, reason
            now = time.monotonic()
            if now >= deadline:
                reason = "timeout"
            elif now >= next_check:
                next_check = now + CHECK_EVERY_S
                reason = over_limit()
            if reason:
                kill()
                _, status, usage = os.wait4(pid, 0)
                return status, usage, reason
            wait_s = max(0.0, min(deadline, next_check) - now)
            if fd is None:
                wait_s = min(wait_s, 0.005)
            poller.poll(wait_s * 1000)
    finally:
        if fd is not None:
            os.close(fd)


def kill_reason(exit_code: int, stderr: str, groups: CgroupSet, *, oom0: int, refused0: int,
                disk_full: bool = False) -> str | None:
    """Why a command that ended on its own was stopped by a limit or a signal (None: it was not).

    ``disk_full``: the command left the sandbox's disk full (``disk_mb`` reached); that counts
    even when it exited 0, since what it wrote was cut short.
    """
    if exit_code == 0:
        return "disk" if disk_full else None
    sig = exit_code - 128 if exit_code > 128 else 0
    tail = stderr[-2000:]
    if groups.oom_kills() > oom0:
        return "memory"
    if sig == signal.SIGXFSZ or "File too large" in tail:  # Python ignores SIGXFSZ: EFBIG
        return "file_size"
    if disk_full or "No space left on device" in tail:
        return "disk"
    if sig == signal.SIGXCPU:
        return "cpu"
    if groups.pids_refused() > refused0:
        return "processes"
    if sig in FATAL_SIGNALS:
        return f"signal {sig}"
    return None
