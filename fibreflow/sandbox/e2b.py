"""E2B sandboxes, for when one machine is not enough: E2B's cloud, or your own hosts.

Each sandbox is an E2B micro-VM created through the ``e2b`` SDK (v2), or a bubblewrap sandbox of
a host that runs ``fibreflow sandbox serve`` (``sandbox.e2b_api_url``; the SDK speaks the same
protocol to both, see ``fibreflow.sandbox.e2b_server``). The repository goes up as
one gzip tar archive (per-file uploads take minutes for thousands of files) and is unpacked into
``/home/user/repo``, where a baseline git commit is made so ``diff()`` is a plain git diff taken
inside the sandbox. Every sandbox carries metadata (``app``, ``fibreflow_run``, ``feature``,
``attempt``) so ``reap_finished_runs`` can find and kill the ones a finished or crashed run left
billing. Creation is throttled and retried with backoff on ``RateLimitException``; a sandbox
that vanished (killed, or its E2B timeout passed) fails its attempt with that reason.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import posixpath
import random
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from fibreflow.errors import SandboxError, SandboxUnavailable
from fibreflow.sandbox.base import CommandResult, SandboxProfile, store_files
from fibreflow.sandbox.repo_archive import repo_archive

if TYPE_CHECKING:
    from fibreflow.config import Settings
    from fibreflow.store import StoreReader

T = TypeVar("T")
WORKDIR = "/home/user/repo"
UPLOAD = ".fibreflow-upload.tar.gz"
DEFAULT_VCPUS, DEFAULT_MEMORY_MB = 2, 512  # E2B's default sandbox size, if get_info cannot say
_EXCLUDE = (".fibreflow/", "__pycache__/", "*.pyc", ".pytest_cache/", ".coverage", ".coverage.*")
_GONE = ("SandboxNotRunningException", "SandboxNotFoundException", "SandboxUnreachableException")
_RETRYABLE = ("RateLimitException", "ServiceBusyException")
_SIG_REASONS = {124: "timeout", 152: "cpu", 153: "file_size"}  # the local backend's words


class _CommandExit(Protocol):
    """What the SDK's ``CommandExitException`` carries: the command ran and exited non-zero."""

    exit_code: int
    stdout: str | None
    stderr: str | None


def _is(exc: BaseException, *names: str) -> bool:
    """Whether ``exc`` is one of the SDK's exception classes, by name (the SDK's modules stay lazy)."""
    return any(cls.__name__ in names for cls in type(exc).__mro__)


def profile_env(profile: SandboxProfile) -> dict[str, str]:
    """The profile's fixed variables plus the host variables it lets through (none by default)."""
    env = dict(profile.env)
    env.update({name: os.environ[name] for name in profile.env_passthrough if name in os.environ})
    return env


class E2BBackend:
    """Creates E2B sandboxes; needs an API key (``sandbox.e2b_api_key_env``, default ``E2B_API_KEY``)
    and the ``e2b`` package. ``api_url`` / ``domain`` (default: ``sandbox.e2b_api_url`` /
    ``sandbox.e2b_domain``) point it at your own hosts instead of E2B's cloud."""

    name = "e2b"

    def __init__(self, *, settings: Settings | None = None, api_key: str | None = None,
                 api_url: str | None = None, domain: str | None = None, run_id: str | None = None,
                 creates_per_second: float | None = None, max_tries: int = 6, backoff_s: float = 0.5,
                 **_: Any) -> None:
        if settings is None:
            from fibreflow.config import load_settings

            settings = load_settings()
        self.settings = settings
        self.run_id = run_id
        self.key_env = settings.sandbox.e2b_api_key_env
        self._api_key = api_key or os.environ.get(self.key_env)
        if not self._api_key:
            raise SandboxUnavailable(f"the e2b backend needs an API key: set {self.key_env} in the environment "
                                     "(for E2B's cloud, create one at https://e2b.dev/dashboard)")
        try:
            from e2b import Sandbox, SandboxQuery
        except ImportError:
            raise SandboxUnavailable("the e2b backend needs the E2B SDK: pip install fibreflow[e2b]") from None
        self.client = Sandbox
        self._query_cls = SandboxQuery
        self.api_url = api_url or settings.sandbox.e2b_api_url
        self.domain = domain or settings.sandbox.e2b_domain
        # the SDK's connection options (its ApiParams): one server answers the API and the sandboxes
        self._opts: dict[str, Any] = {"api_key": self._api_key}
        if self.api_url:
            self._opts.update(api_url=self.api_url, sandbox_url=self.api_url)
        elif self.domain:
            self._opts["domain"] = self.domain
        if creates_per_second is None:
            creates_per_second = settings.sandbox.e2b_creates_per_second
        self._min_interval = 1.0 / creates_per_second if creates_per_second > 0 else 0.0
        self._max_tries = max_tries
        self._backoff_s = backoff_s
        self._next_create = 0.0
        self._create_lock = threading.Lock()

    # -- creation ----------------------------------------------------------------------------

    def create(self, repo: str | Path, profile: SandboxProfile | str = "python-tests", *,
               labels: Mapping[str, str] | None = None) -> E2BSandbox:
        """A new sandbox holding ``repo``'s files at ``/home/user/repo``, tagged with ``labels``."""
        from fibreflow.sandbox.profiles import load_profile

        profile = load_profile(profile)
        labels = dict(labels or {})
        metadata = {"app": "fibreflow",
                    "fibreflow_run": labels.get("fibreflow_run") or labels.get("run_id") or self.run_id or "adhoc",
                    "feature": labels.get("feature_id") or labels.get("feature") or "",
                    "attempt": labels.get("attempt_id") or labels.get("attempt") or ""}
        # before the VM exists: an unreadable repo costs nothing; the store and the state stay here
        archive = repo_archive(Path(repo), exclude=[*store_files(self.settings.db_path), self.settings.state_dir])
        lifetime = int(min(3600, max(300, 3 * profile.wall_timeout_s + 120)))
        sdk = self._with_retries("create", lambda: self.client.create(
            template=self.settings.sandbox.e2b_template, timeout=lifetime, metadata=metadata,
            envs=profile_env(profile), allow_internet_access=profile.network, **self._opts),
            throttle=True)
        box = E2BSandbox(self, sdk, profile, metadata=metadata)
        try:
            box._unpack(archive)
        except BaseException:
            box.close()
            raise
        return box

    def _throttle(self) -> None:
        with self._create_lock:  # E2B allows 1 (Hobby) to 5 (Pro) creations per second
            now = time.monotonic()
            wait = self._next_create - now
            self._next_create = max(now, self._next_create) + self._min_interval
        if wait > 0:
            time.sleep(wait)

    def _with_retries(self, what: str, call: Callable[[], T], *, throttle: bool = False) -> T:
        for attempt in range(1, self._max_tries + 1):
            if throttle:
                self._throttle()
            try:
                return call()
            except Exception as exc:
                if _is(exc, *_RETRYABLE) and attempt < self._max_tries:
                    delay = min(30.0, self._backoff_s * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
                    time.sleep(delay)
                    continue
                raise self._translate(exc, what) from exc
        raise AssertionError("unreachable")

    # -- reaping -----------------------------------------------------------------------------

    def list_sandboxes(self) -> list[Any]:
        """Every fibreflow sandbox alive in the E2B team (``SandboxInfo`` records)."""
        def pages() -> list[Any]:
            pager = self.client.list(query=self._query_cls(metadata={"app": "fibreflow"}), **self._opts)
            found: list[Any] = []
            while pager.has_next:
                found += pager.next_items()
            return found
        return self._with_retries("list", pages)

    def reap_finished_runs(self, store: StoreReader | None = None) -> list[str]:
        """Kill fibreflow sandboxes whose run is no longer ``running`` in the store; returns their ids.

        Sandboxes of runs this store does not know are left alone: they may be a colleague's.
        """
        boxes = self.list_sandboxes()
        runs = sorted({b.metadata.get("fibreflow_run", "") for b in boxes} - {""})
        if not runs:
            return []
        if store is None:
            from fibreflow.store import open_store

            store = open_store()
        marks = ", ".join("?" for _ in runs)
        status = dict(store.query_df(f"SELECT run_id, status FROM runs WHERE run_id IN ({marks})",
                                     runs).itertuples(index=False, name=None))
        killed = []
        for info in boxes:
            run = info.metadata.get("fibreflow_run", "")
            if run in status and status[run] != "running":
                self.kill(info.sandbox_id)
                killed.append(info.sandbox_id)
        return killed

    def kill(self, sandbox_id: str) -> bool:
        """Kill one sandbox by id; False when E2B no longer knows it."""
        return bool(self._with_retries("kill", lambda: self.client.kill(sandbox_id, **self._opts)))

    def _translate(self, exc: BaseException, what: str) -> SandboxError:
        return _translate(exc, what, key_env=self.key_env)


def _translate(exc: BaseException, what: str, *, key_env: str = "E2B_API_KEY") -> SandboxError:
    """The SDK's error as a SandboxError whose message says what happened and what to do."""
    if _is(exc, "AuthenticationException"):
        return SandboxUnavailable(f"E2B rejected the API key in {key_env} ({what}): {exc}")
    if _is(exc, *_RETRYABLE):
        return SandboxError(f"E2B kept refusing to {what} (rate limit or capacity) after retries: {exc}")
    if _is(exc, *_GONE):
        return SandboxError(f"E2B sandbox is gone (killed, or its E2B timeout passed) during {what}: {exc}")
    if _is(exc, "TimeoutException"):
        return SandboxError(f"E2B timed out during {what}: {exc}")
    return SandboxError(f"E2B {what} failed: {type(exc).__name__}: {exc}")


class E2BSandbox:
    """One E2B sandbox holding a copy of the repository; implements the ``Sandbox`` protocol."""

    backend = "e2b"
    isolation = "e2b-microvm"
    workdir = WORKDIR

    def __init__(self, owner: E2BBackend, sdk: Any, profile: SandboxProfile, *,
                 metadata: Mapping[str, str]) -> None:
        self._owner = owner
        self._sdk = sdk
        self.id: str = sdk.sandbox_id
        self.profile = profile
        self.metadata = dict(metadata)
        self.started_at = dt.datetime.now(dt.UTC)
        self.ended_at: dt.datetime | None = None
        self.killed_reason: str | None = None  # why the last killed command was killed
        self.close_error: str | None = None
        self._started = time.monotonic()
        self._ended: float | None = None
        try:
            info = sdk.get_info()
            self.vcpus, self.memory_mb = int(info.cpu_count), int(info.memory_mb)
        except Exception:  # sizing only feeds the cost estimate; the defaults are E2B's own
            self.vcpus, self.memory_mb = DEFAULT_VCPUS, DEFAULT_MEMORY_MB

    # -- the protocol --------------------------------------------------------------------------

    def run(self, cmd: str | list[str], *, timeout: float | None = None,
            env: Mapping[str, str] | None = None) -> CommandResult:
        """Run ``cmd`` with bash in the workspace under the profile's CPU-time and file-size limits."""
        text = shlex.join(cmd) if isinstance(cmd, list) else cmd
        limit = timeout if timeout is not None else self.profile.wall_timeout_s
        # coreutils timeout kills the command's whole process group inside the VM; the SDK's own
        # timeout is only the backstop for a wedged connection. "exit $?" keeps bash from exec'ing
        # timeout, so a death by signal (SIGXCPU, SIGXFSZ) reads as 128+N like everywhere else
        wrapped = (f"ulimit -S -t {int(self.profile.cpu_time_s)} -f {int(self.profile.max_file_size_mb) * 1024}"
                   f" 2>/dev/null; timeout -k 5 {max(1, math.ceil(limit))} bash -c {shlex.quote(text)}; exit $?")
        started = time.monotonic()
        try:
            res = self._sdk.commands.run(wrapped, envs=dict(env or {}), cwd=self.workdir, timeout=limit + 30)
            code, out, err = res.exit_code, res.stdout or "", res.stderr or ""
        except Exception as exc:
            if _is(exc, "CommandExitException"):
                failed = cast(_CommandExit, exc)  # matched by class name, the SDK imported lazily
                code, out, err = failed.exit_code, failed.stdout or "", failed.stderr or ""
            elif _is(exc, "TimeoutException") and not _is(exc, *_GONE):
                self.killed_reason = "timeout"
                return CommandResult(124, "", str(exc), time.monotonic() - started, True, "timeout")
            else:
                raise self._owner._translate(exc, f"run a command in sandbox {self.id}") from exc
        duration = time.monotonic() - started
        reason = _SIG_REASONS.get(code)
        if code == 137 and duration >= limit:
            reason = "timeout"
        if reason is not None:
            self.killed_reason = reason
        return CommandResult(code, out, err, duration, reason is not None, reason)

    def write_files(self, files: Mapping[str, str | bytes]) -> None:
        """Write files given by workspace-relative path, in one request."""
        entries = [{"path": self._path(p), "data": data} for p, data in files.items()]
        if entries:
            self._call("write files", lambda: self._sdk.files.write_files(entries))

    def read_file(self, path: str) -> str:
        """A workspace file's text; FileNotFoundError if it does not exist."""
        try:
            return self._call("read a file", lambda: self._sdk.files.read(self._path(path)))
        except SandboxError as exc:
            if _is(exc.__cause__ or exc, "FileNotFoundException"):
                raise FileNotFoundError(path) from None
            raise

    def diff(self) -> str:
        """The attempt's change against the uploaded repository, new files included (git, in the VM)."""
        res = self.run("git add -A . >/dev/null && git -c core.quotepath=off diff --cached --binary "
                       "--no-renames --no-color HEAD", timeout=120)
        if res.exit_code != 0:
            raise SandboxError(f"git diff failed in E2B sandbox {self.id}: {res.stderr.strip()[-500:]}")
        return res.stdout

    def close(self) -> None:
        """Kill the VM (idempotent); its lifetime is then fixed for the cost estimate."""
        if self._ended is not None:
            return
        self._ended = time.monotonic()
        self.ended_at = dt.datetime.now(dt.UTC)
        try:
            self._owner.kill(self.id)
        except SandboxError as exc:
            # it still dies at its E2B timeout; the reaper will retry at the run's end
            self.close_error = str(exc)

    def __enter__(self) -> E2BSandbox:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- accounting ----------------------------------------------------------------------------

    @property
    def lifetime_s(self) -> float:
        """Seconds from creation to close (or to now, while open)."""
        return (self._ended or time.monotonic()) - self._started

    def estimated_cost_usd(self) -> float:
        """E2B's price for this sandbox's lifetime: vCPU-seconds plus GiB-seconds of memory."""
        s = self._owner.settings.sandbox
        seconds = self.lifetime_s
        return seconds * (self.vcpus * s.e2b_vcpu_second_usd + self.memory_mb / 1024 * s.e2b_gib_second_usd)

    # -- internals -----------------------------------------------------------------------------

    def _path(self, path: str) -> str:
        if path == "/workspace" or path.startswith("/workspace/"):  # the local backend's mount point
            path = path[len("/workspace/"):]
        full = posixpath.normpath(posixpath.join(self.workdir, path))
        if full != self.workdir and not full.startswith(self.workdir + "/"):
            raise SandboxError(f"path {path!r} is outside the sandbox's workspace")
        return full

    def _call(self, what: str, call: Callable[[], T]) -> T:
        try:
            return call()
        except Exception as exc:
            raise self._owner._translate(exc, f"{what} in sandbox {self.id}") from exc

    def _unpack(self, archive: bytes) -> None:
        self._call("upload the repository", lambda: self._sdk.files.write(f"{self.workdir}/{UPLOAD}", archive))
        exclude = "\\n".join(_EXCLUDE)
        script = (
            "command -v git >/dev/null || { echo 'git is not installed in this E2B template' >&2; exit 127; }; "
            f"tar -xzf {UPLOAD} && rm -f {UPLOAD} && git init -q . && mkdir -p .git/info && "
            f"printf '{exclude}\\n' >> .git/info/exclude && git add -A . && "
            "git -c user.name=fibreflow -c user.email=fibreflow@localhost -c commit.gpgsign=false "
            "commit -q --no-verify --allow-empty -m baseline")
        res = self.run(script, timeout=300)
        if res.exit_code != 0:
            raise SandboxError(f"could not unpack the repository in E2B sandbox {self.id}: "
                               f"{(res.stderr or res.stdout).strip()[-500:]}")
