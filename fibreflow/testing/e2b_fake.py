"""A deterministic stand-in for the E2B cloud, with the ``e2b`` SDK's class names and signatures.

``FakeCloud`` plays the E2B service: its ``Sandbox`` class has the SDK's ``create``, ``list``,
``kill``, ``get_info``, ``commands.run`` and ``files.write/write_files/read``, raises the SDK's
exception names (``RateLimitException``, ``TimeoutException``, ``SandboxNotFoundException``,
``CommandExitException`` ...) and keeps each sandbox's filesystem in a local temp directory
where commands run as real subprocesses. Ids are sequential, so runs are repeatable. Tests
inject faults with ``fail_next`` and ``expire``; ``tests/sandbox/test_e2b.py`` checks every
signature here against the installed SDK, so drift between the two is caught.

Limits of the double: commands see the host's tools (the ``python`` of this interpreter comes
first on ``PATH``) and only ``cwd`` and file paths are mapped into the sandbox's directory, so a
command naming an absolute path outside its workspace is not contained.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# -- the SDK's exceptions and records, same names and fields ------------------------------------


class SandboxException(Exception):
    def __init__(self, *args, status_code: int | None = None):
        super().__init__(*args)
        self.status_code = status_code


class TimeoutException(SandboxException): ...
class InvalidArgumentException(SandboxException): ...
class NotFoundException(SandboxException): ...
class FileNotFoundException(NotFoundException): ...
class SandboxNotFoundException(NotFoundException): ...
class SandboxNotRunningException(TimeoutException): ...
class AuthenticationException(Exception): ...


class RateLimitException(SandboxException):
    def __init__(self, *args):
        super().__init__(*args, status_code=429)


@dataclass
class CommandResult:
    stderr: str
    stdout: str
    exit_code: int
    error: str | None


@dataclass
class CommandExitException(SandboxException, CommandResult):
    def __str__(self) -> str:
        return f"Command exited with code {self.exit_code} and error:\n{self.stderr}"


class SandboxState(str, enum.Enum):  # noqa: UP042 - the SDK's shape
    PAUSED = "paused"
    RUNNING = "running"


@dataclass
class SandboxQuery:
    metadata: dict[str, str] | None = None
    state: list[SandboxState] | None = None
    started_after: dt.datetime | None = None
    template: str | None = None


@dataclass
class SandboxInfo:
    sandbox_id: str
    sandbox_domain: str | None
    template_id: str
    name: str | None
    metadata: dict[str, str]
    started_at: dt.datetime
    end_at: dt.datetime
    state: SandboxState
    cpu_count: int
    memory_mb: int
    envd_version: str
    allow_internet_access: bool | None = None


@dataclass
class WriteInfo:
    name: str
    type: str | None
    path: str
    metadata: dict[str, str] | None = field(default=None, kw_only=True)


class class_method_variant:  # noqa: N801 - the SDK's name: one method, instance or class call
    def __init__(self, class_method_name: str) -> None:
        self.class_method_name = class_method_name

    def __call__(self, method: Any) -> Any:
        self.method = method
        return self

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        @functools.wraps(self.method)
        def _wrapper(*args: Any, **kwargs: Any) -> Any:
            if obj is not None:
                return self.method(obj, *args, **kwargs)
            return getattr(objtype, self.class_method_name)(*args, **kwargs)
        return _wrapper


# -- the service ---------------------------------------------------------------------------------


@dataclass
class _Box:
    sandbox_id: str
    root: Path
    template: str
    metadata: dict[str, str]
    envs: dict[str, str]
    started_at: dt.datetime
    end_at: dt.datetime
    allow_internet_access: bool | None


class FakeCloud:
    """The fake E2B service: holds sandboxes, enforces the API key, rates and timeouts."""

    def __init__(self, root: str | Path | None = None, *, api_key: str | None = None,
                 creates_per_second: float | None = None, cpu_count: int = 2, memory_mb: int = 512,
                 page_size: int = 100) -> None:
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="fibreflow-e2bfake-"))
        self.api_key = api_key
        self.creates_per_second = creates_per_second
        self.cpu_count = cpu_count
        self.memory_mb = memory_mb
        self.page_size = page_size
        self.calls: list[tuple[str, str | None]] = []
        self.boxes: dict[str, _Box] = {}
        self._ids = itertools.count(1)
        self._creates: deque[float] = deque()
        self._faults: dict[str, list[BaseException]] = {}
        self._lock = threading.RLock()
        self.Sandbox: type[Sandbox] = type("Sandbox", (Sandbox,), {"_cloud": self})

    # -- fault injection -----------------------------------------------------------------------

    def fail_next(self, operation: str, exc: BaseException, *, times: int = 1) -> None:
        """Make the next ``times`` calls of ``operation`` (create, list, kill, run, write, read) raise."""
        with self._lock:
            self._faults.setdefault(operation, []).extend([exc] * times)

    def expire(self, sandbox_id: str) -> None:
        """End a sandbox as E2B does when its timeout passes."""
        with self._lock:
            box = self.boxes.pop(sandbox_id, None)
        if box:
            shutil.rmtree(box.root, ignore_errors=True)

    def running(self) -> list[str]:
        """Ids of the sandboxes alive now."""
        with self._lock:
            self._reap_expired()
            return sorted(self.boxes)

    def close(self) -> None:
        """Kill every sandbox and remove the service's directory."""
        for sid in list(self.boxes):
            self.expire(sid)
        shutil.rmtree(self.root, ignore_errors=True)

    # -- internals used by the Sandbox class ---------------------------------------------------

    def _call(self, operation: str, sandbox_id: str | None, opts: dict[str, Any]) -> None:
        key = opts.get("api_key") or os.environ.get("E2B_API_KEY")
        with self._lock:
            self.calls.append((operation, sandbox_id))
            if not key:
                raise AuthenticationException("API key is required, please visit the Team tab at "
                                              "https://e2b.dev/dashboard to get your API key.")
            if self.api_key is not None and key != self.api_key:
                raise AuthenticationException("401: Invalid API key")
            faults = self._faults.get(operation)
            if faults:
                raise faults.pop(0)

    def _reap_expired(self) -> None:
        now = dt.datetime.now(dt.UTC)
        for sid in [s for s, b in self.boxes.items() if b.end_at <= now]:
            self.expire(sid)

    def _box(self, sandbox_id: str, *, control_plane: bool = False) -> _Box:
        with self._lock:
            self._reap_expired()
            box = self.boxes.get(sandbox_id)
        if box is None:
            if control_plane:
                raise SandboxNotFoundException(f"Sandbox {sandbox_id} not found")
            raise SandboxNotRunningException(
                f"The sandbox {sandbox_id} was not found: The sandbox was killed or reached its timeout.")
        return box

    def _create(self, template: str, timeout: int, metadata: dict[str, str], envs: dict[str, str],
                allow_internet_access: bool | None) -> _Box:
        with self._lock:
            now_s = time.monotonic()
            while self._creates and now_s - self._creates[0] > 1.0:
                self._creates.popleft()
            if self.creates_per_second is not None and len(self._creates) >= self.creates_per_second:
                raise RateLimitException("429: Rate limit exceeded, please try again later.")
            self._creates.append(now_s)
            sid = f"ifake{next(self._ids):07d}"
            root = self.root / sid
            (root / "home" / "user").mkdir(parents=True)
            (root / "tmp").mkdir()
            started = dt.datetime.now(dt.UTC)
            box = _Box(sid, root, template, dict(metadata), dict(envs), started,
                       started + dt.timedelta(seconds=timeout), allow_internet_access)
            self.boxes[sid] = box
            return box


class Sandbox:
    """The SDK's ``Sandbox`` (sync), bound to a ``FakeCloud`` through ``FakeCloud.Sandbox``."""

    _cloud: FakeCloud
    default_template = "base"

    def __init__(self, **opts: Any) -> None:
        self._box: _Box = opts["box"]
        self._opts = {k: v for k, v in opts.items() if k != "box"}
        self._commands = Commands(self)
        self._filesystem = Filesystem(self)

    @property
    def sandbox_id(self) -> str:
        return self._box.sandbox_id

    @property
    def files(self) -> Filesystem:
        return self._filesystem

    @property
    def commands(self) -> Commands:
        return self._commands

    @classmethod
    def create(cls, template: str | None = None, timeout: int | None = None,
               metadata: dict[str, str] | None = None, envs: dict[str, str] | None = None,
               secure: bool | None = None, allow_internet_access: bool | None = None,
               mcp: Any = None, network: Any = None, iam: Any = None, lifecycle: Any = None,
               volume_mounts: Any = None, logger: Any = None, idempotency_key: str | None = None,
               **opts: Any) -> Sandbox:
        cls._cloud._call("create", None, opts)
        box = cls._cloud._create(template or cls.default_template, timeout or 300, metadata or {},
                                 envs or {}, allow_internet_access)
        return cls(box=box, **opts)

    @classmethod
    def list(cls, query: SandboxQuery | None = None, limit: int | None = None,
             next_token: str | None = None, order: str | None = None,
             **opts: Any) -> SandboxPaginator:
        return SandboxPaginator(cls._cloud, query=query, limit=limit, next_token=next_token, **opts)

    @class_method_variant("_cls_kill")
    def kill(self, **opts: Any) -> bool:
        return type(self)._cls_kill(self.sandbox_id, **{**self._opts, **opts})

    @classmethod
    def _cls_kill(cls, sandbox_id: str, **opts: Any) -> bool:
        cls._cloud._call("kill", sandbox_id, opts)
        with cls._cloud._lock:
            known = sandbox_id in cls._cloud.boxes
        cls._cloud.expire(sandbox_id)
        return known

    @class_method_variant("_cls_get_info")
    def get_info(self, **opts: Any) -> SandboxInfo:
        return type(self)._cls_get_info(self.sandbox_id, **{**self._opts, **opts})

    @classmethod
    def _cls_get_info(cls, sandbox_id: str, **opts: Any) -> SandboxInfo:
        cls._cloud._call("get_info", sandbox_id, opts)
        return _info(cls._cloud, cls._cloud._box(sandbox_id, control_plane=True))

    def is_running(self, request_timeout: float | None = None) -> bool:
        with self._cloud._lock:
            self._cloud._reap_expired()
            return self.sandbox_id in self._cloud.boxes

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        self.kill()


def _info(cloud: FakeCloud, box: _Box) -> SandboxInfo:
    return SandboxInfo(box.sandbox_id, "fake.e2b.local", box.template, box.template, dict(box.metadata),
                       box.started_at, box.end_at, SandboxState.RUNNING, cloud.cpu_count, cloud.memory_mb,
                       "0.2.0", box.allow_internet_access)


class SandboxPaginator:
    """Pages of ``SandboxInfo``: ``while p.has_next: p.next_items()``."""

    def __init__(self, cloud: FakeCloud, *, query: SandboxQuery | None, limit: int | None,
                 next_token: str | None, **opts: Any) -> None:
        self._cloud, self.query, self.limit, self._opts = cloud, query, limit, opts
        self._next_token = next_token
        self._has_next = True

    @property
    def has_next(self) -> bool:
        return self._has_next

    @property
    def next_token(self) -> str | None:
        return self._next_token

    def next_items(self, **opts: Any) -> list[SandboxInfo]:
        if not self._has_next:
            raise Exception("No more items to fetch")
        self._cloud._call("list", None, {**self._opts, **opts})
        with self._cloud._lock:
            self._cloud._reap_expired()
            boxes = sorted(self._cloud.boxes.values(), key=lambda b: b.sandbox_id)
        wanted = (self.query.metadata or {}) if self.query else {}
        boxes = [b for b in boxes if all(b.metadata.get(k) == v for k, v in wanted.items())]
        start = int(self._next_token or 0)
        size = self.limit or self._cloud.page_size
        page = boxes[start:start + size]
        more = start + size < len(boxes)
        self._next_token = str(start + size) if more else None
        self._has_next = more
        return [_info(self._cloud, b) for b in page]


class Commands:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def run(self, cmd: str, background: bool | None = None, envs: dict[str, str] | None = None,
            user: str | None = None, cwd: str | None = None, on_stdout: Any = None,
            on_stderr: Any = None, stdin: bool | None = None, timeout: float | None = 60,
            request_timeout: float | None = None, *, retain_output: bool = True) -> CommandResult:
        sbx = self._sandbox
        cloud = sbx._cloud
        cloud._call("run", sbx.sandbox_id, sbx._opts)
        box = cloud._box(sbx.sandbox_id)
        if background:
            raise InvalidArgumentException("the fake runs commands in the foreground only")
        home = box.root / "home" / "user"
        env = {"PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin"),
               "HOME": str(home), "USER": user or "user", "LANG": "C.UTF-8",
               **box.envs, **(envs or {})}
        workdir = _resolve(box, cwd) if cwd else home
        if not workdir.is_dir():
            raise SandboxException(f"cwd '{cwd}' does not exist")
        proc = subprocess.Popen(["/bin/bash", "-c", cmd], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=timeout or None)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise TimeoutException("context deadline exceeded: This error is likely due to exceeding "
                                   "'timeout' — the total time a long running request can be active.") from None
        stdout, stderr = out.decode(errors="replace"), err.decode(errors="replace")
        for callback, text in ((on_stdout, stdout), (on_stderr, stderr)):
            if callback and text:
                callback(text)
        if proc.returncode != 0:
            raise CommandExitException(stderr=stderr, stdout=stdout, exit_code=proc.returncode,
                                       error=f"exit status {proc.returncode}")
        return CommandResult(stderr=stderr, stdout=stdout, exit_code=0, error=None)


def _resolve(box: _Box, path: str) -> Path:
    base = box.root / "home" / "user"
    target = (box.root / path.lstrip("/")) if path.startswith("/") else base / path
    target = Path(os.path.normpath(target))
    if target != box.root and box.root not in target.parents:
        raise InvalidArgumentException(f"path '{path}' is outside the sandbox")
    return target


class Filesystem:
    def __init__(self, sandbox: Sandbox) -> None:
        self._sandbox = sandbox

    def _box(self, operation: str) -> _Box:
        sbx = self._sandbox
        sbx._cloud._call(operation, sbx.sandbox_id, sbx._opts)
        return sbx._cloud._box(sbx.sandbox_id)

    def read(self, path: str, format: str = "text", user: str | None = None,
             request_timeout: float | None = None, gzip: bool = False,
             stream_idle_timeout: float | None = None) -> Any:
        target = _resolve(self._box("read"), path)
        if not target.is_file():
            raise FileNotFoundException(f"file '{path}' not found")
        data = target.read_bytes()
        return data.decode() if format == "text" else data

    def write(self, path: str, data: Any, user: str | None = None,
              request_timeout: float | None = None, gzip: bool = False,
              use_octet_stream: bool | None = None, metadata: dict[str, str] | None = None) -> WriteInfo:
        return self._write_one(self._box("write"), path, data, metadata)

    def write_files(self, files: Any, user: str | None = None, request_timeout: float | None = None,
                    gzip: bool = False, use_octet_stream: bool | None = None,
                    metadata: dict[str, str] | None = None) -> list[WriteInfo]:
        box = self._box("write")
        return [self._write_one(box, f["path"], f["data"], metadata) for f in files]

    @staticmethod
    def _write_one(box: _Box, path: str, data: Any, metadata: dict[str, str] | None) -> WriteInfo:
        target = _resolve(box, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if hasattr(data, "read"):
            data = data.read()
        target.write_bytes(data.encode() if isinstance(data, str) else bytes(data))
        return WriteInfo(target.name, "file", path, metadata=metadata)

    def exists(self, path: str, user: str | None = None, request_timeout: float | None = None) -> bool:
        return _resolve(self._box("read"), path).exists()


__all__ = [
    "AuthenticationException", "CommandExitException", "CommandResult", "FakeCloud",
    "FileNotFoundException", "InvalidArgumentException", "NotFoundException", "RateLimitException",
    "Sandbox", "SandboxException", "SandboxInfo", "SandboxNotFoundException",
    "SandboxNotRunningException", "SandboxPaginator", "SandboxQuery", "SandboxState",
    "TimeoutException", "WriteInfo",
]
