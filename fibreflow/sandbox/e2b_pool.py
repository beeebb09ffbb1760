"""The sandboxes an E2B-protocol server keeps: local sandboxes with E2B's lifecycle.

Each served sandbox is a ``LocalSandbox`` (bubblewrap over an overlay, ``fibreflow.sandbox.local``)
of an empty template directory, whose commands also see their workspace at E2B's home,
``/home/user``. It keeps what it was created with (template, metadata, environment, network)
and an envd access token, and it has an end time: the reaper kills it once that passes, as E2B
kills a sandbox whose timeout passed; ``set_timeout`` moves the end time. A killed sandbox is
forgotten at once, so asking for it again is the cloud's "not found".
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from fibreflow.clock import utc_now
from fibreflow.errors import SandboxError
from fibreflow.sandbox.base import SandboxProfile
from fibreflow.sandbox.isolation import MODE_COPY
from fibreflow.sandbox.local import LocalBackend, LocalSandbox

HOME = "/home/user"
"""Where E2B sandboxes keep the user's files; here, the local sandbox's workspace."""
ENVD_VERSION = "0.5.7"
"""The envd version this server answers as: closing stdin and octet-stream uploads, no file metadata."""
MAX_TIMEOUT_S = 86_400  # E2B Pro's longest sandbox lifetime
DEFAULT_TIMEOUT_S = 300


class SandboxGone(SandboxError):
    """The sandbox does not exist (never did, was killed, or its timeout passed)."""


class TooManyRequests(SandboxError):
    """A create refused by the server's test knob ``fail_creates``."""


@dataclass
class ServedSandbox:
    """One sandbox of the pool: its local sandbox and what E2B says about it."""

    sandbox_id: str
    box: LocalSandbox
    template: str
    metadata: dict[str, str]
    envs: dict[str, str]
    allow_internet_access: bool
    access_token: str
    started_at: dt.datetime
    end_at: dt.datetime
    cpu_count: int = 2
    killed: bool = False

    @property
    def alive(self) -> bool:
        """Not killed, and its timeout has not passed."""
        return not self.killed and utc_now() < self.end_at


class SandboxPool:
    """Creates, finds, times out and kills the served sandboxes; thread-safe."""

    def __init__(self, *, profile: SandboxProfile, state_dir: Path | None = None, cpu_count: int = 2,
                 fail_creates: int = 0, reap_every_s: float = 0.5) -> None:
        """``fail_creates`` is a test knob: the first N creations are refused as 429."""
        self.profile = profile
        self.cpu_count = cpu_count
        self.backend = LocalBackend(state_dir=state_dir)
        if self.backend.mode == MODE_COPY:
            raise SandboxError("serving E2B sandboxes needs bubblewrap: this host only offers "
                               f"{self.backend.mode}, where commands would run on the host itself")
        self._template_dir = tempfile.TemporaryDirectory(prefix="fibreflow-e2b-template-")
        self._boxes: dict[str, ServedSandbox] = {}
        self._lock = threading.Lock()
        self._fail_creates = fail_creates
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, args=(reap_every_s,), name="e2b-reaper",
                                        daemon=True)
        self._reaper.start()

    # -- lifecycle -------------------------------------------------------------------------

    def create(self, *, template: str, timeout_s: int | None, metadata: Mapping[str, str],
               envs: Mapping[str, str], allow_internet_access: bool | None) -> ServedSandbox:
        """A new running sandbox; SandboxError if the timeout is out of range."""
        timeout = DEFAULT_TIMEOUT_S if timeout_s is None else int(timeout_s)
        if not 0 < timeout <= MAX_TIMEOUT_S:
            raise SandboxError(f"timeout must be between 1 and {MAX_TIMEOUT_S} seconds, got {timeout}")
        with self._lock:
            if self._fail_creates > 0:
                self._fail_creates -= 1
                raise TooManyRequests("rate limit exceeded (test knob fail_creates)")
        network = self.profile.network if allow_internet_access is None else bool(allow_internet_access)
        profile = dataclasses.replace(self.profile, network=network)
        sandbox_id = "i" + secrets.token_hex(10)
        box = self.backend.create(Path(self._template_dir.name), profile,
                                  labels={"e2b_sandbox": sandbox_id, "template": template}, aliases=(HOME,))
        now = utc_now()
        served = ServedSandbox(sandbox_id, box, template, dict(metadata), dict(envs), network,
                               secrets.token_urlsafe(24), now, now + dt.timedelta(seconds=timeout), self.cpu_count)
        with self._lock:
            self._boxes[sandbox_id] = served
        return served

    def get(self, sandbox_id: str) -> ServedSandbox:
        """The running sandbox with this id; SandboxGone if there is none."""
        with self._lock:
            served = self._boxes.get(sandbox_id)
        if served is None or not served.alive:
            if served is not None:
                self.kill(sandbox_id)
            raise SandboxGone(f"sandbox {sandbox_id!r} doesn't exist or you don't have access to it")
        return served

    def running(self) -> list[ServedSandbox]:
        """Every running sandbox, oldest first."""
        with self._lock:
            boxes = list(self._boxes.values())
        return sorted((b for b in boxes if b.alive), key=lambda b: (b.started_at, b.sandbox_id))

    def set_timeout(self, sandbox_id: str, timeout_s: int) -> ServedSandbox:
        """The sandbox now ends ``timeout_s`` seconds from now (longer or shorter)."""
        if not 0 < timeout_s <= MAX_TIMEOUT_S:
            raise SandboxError(f"timeout must be between 1 and {MAX_TIMEOUT_S} seconds, got {timeout_s}")
        served = self.get(sandbox_id)
        served.end_at = utc_now() + dt.timedelta(seconds=timeout_s)
        return served

    def extend(self, sandbox_id: str, timeout_s: int) -> ServedSandbox:
        """Connecting: the end time only moves later, as E2B's connect does for a running sandbox."""
        served = self.get(sandbox_id)
        served.end_at = max(served.end_at, utc_now() + dt.timedelta(seconds=min(timeout_s, MAX_TIMEOUT_S)))
        return served

    def kill(self, sandbox_id: str) -> bool:
        """Kill the sandbox (its running command too); False if no such sandbox was running."""
        with self._lock:
            served = self._boxes.pop(sandbox_id, None)
        if served is None:
            return False
        was_alive = served.alive
        served.killed = True
        served.box.close()
        return was_alive

    def close(self) -> None:
        """Kill every sandbox and stop the reaper."""
        self._stop.set()
        with self._lock:
            ids = list(self._boxes)
        for sandbox_id in ids:
            self.kill(sandbox_id)
        self.backend.drain()
        self._template_dir.cleanup()

    def _reap_loop(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            with self._lock:
                expired = [sid for sid, b in self._boxes.items() if not b.alive]
            for sandbox_id in expired:
                self.kill(sandbox_id)


__all__ = ["ENVD_VERSION", "HOME", "SandboxGone", "SandboxPool", "ServedSandbox", "TooManyRequests"]
