"""The local backend: bubblewrap namespaces over a copy-on-write overlay of the repository.

A sandbox is a directory ``<state>/sandboxes/<id>/`` holding a registry entry and its disk
(``disk/``: a tmpfs of the profile's ``disk_mb``, see ``fibreflow.sandbox.disk``) with the
overlay's upper layer (what the attempt changed). Each command runs as::

    unshare -m  ->  sh: join cgroups, set rlimits, mount overlay(lower=repo, upper)  ->  bwrap

so the overlay mount lives in a private mount namespace and vanishes with the command, and
creating a sandbox costs a few directories whatever the repository's size. bwrap adds new
user (no capabilities), PID, IPC, UTS, cgroup and network namespaces, a private /tmp and only
read-only system paths. When the command ends, its PID namespace ends and every process in it
(daemons included) is killed, so between commands nothing runs and the host can read and
write the layers directly (``fibreflow.sandbox.layers``).

What an attempt sees: its repository copy, the interpreter, the system's tools and a minimal
/etc; nothing of the store, the state directory, other sandboxes or the host's home, even when
the repository contains them:

- the store (``Settings.db_path``) and its WAL, lock and temp files, the state directory and
  the fallback layer directories, and the home directory, where they lie inside the repository,
  are masked by whiteouts in the upper layer (copy modes: never copied) and kept out of the
  diff and of ``read_file``: the default layout (``data/fibreflow.duckdb`` under ``--repo .``)
  must keep working, so these are hidden, not refused;
- a repository that lies inside the state directory, or is the home directory itself, is
  refused: there is nothing left to show once those are hidden;
- sandboxes of a repository that contains the state directory keep their layers in the first
  fallback directory outside it (``$TMPDIR``, ``/tmp``, ``/var/tmp``), or are refused, naming
  both paths, when there is none. Every upper layer is its own tmpfs mount, and an overlay never
  shows the mounts below its lower layer, so no sandbox shows another's layers either way.

In the copy mode without bubblewrap a command runs on the host and can read anything there.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from fibreflow.clock import utc_now
from fibreflow.errors import SandboxError
from fibreflow.sandbox import disk as disk_mod
from fibreflow.sandbox.base import CommandResult, SandboxProfile, store_files
from fibreflow.sandbox.cgroups import CgroupSet
from fibreflow.sandbox.cgroups import available as cgroups_available
from fibreflow.sandbox.diffing import diff_copy, diff_overlay
from fibreflow.sandbox.isolation import (
    HOST_PATH,
    MODE_BWRAP_COPY,
    MODE_COPY,
    MODE_OVERLAY,
    MODES,
    isolation_mode,
    prepare_etc,
    python_args,
    python_bin,
    system_args,
)
from fibreflow.sandbox.launch import BASH, kill_reason, read_output, setup_failed, setup_script, wait_for
from fibreflow.sandbox.layers import WORKSPACE, LayerView, hidden_within, is_hidden
from fibreflow.sandbox.state import (
    MARKER_ENV,
    ReapReport,
    janitor,
    owner_record,
    processes_with_marker,
    reap_orphans,
    register,
    remove_tree,
)

if TYPE_CHECKING:
    from fibreflow.store import StoreReader

log = logging.getLogger(__name__)

__all__ = ["LocalBackend", "LocalSandbox", "isolation_mode"]

_ARTEFACTS = ".fibreflow"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_ALIASES = {"overlay": MODE_OVERLAY, "bwrap-copy": MODE_BWRAP_COPY, "copy": MODE_COPY}


class LocalSandbox:
    """One isolated, copy-on-write view of a repository (use ``LocalBackend.create``)."""

    backend = "local"

    def __init__(self, *, root: Path, repo: Path, profile: SandboxProfile, mode: str,
                 etc: Path | None = None, labels: Mapping[str, str] | None = None,
                 hidden: tuple[str, ...] = (), limit_disk: bool = False, aliases: tuple[str, ...] = ()) -> None:
        """``hidden``: workspace paths to mask (see the module docstring); ``limit_disk``: put
        what the attempt writes on a tmpfs of ``profile.disk_mb``; ``aliases``: more absolute paths
        at which commands see the workspace (symlinks to it, e.g. E2B's ``/home/user``)."""
        self.id = uuid.uuid4().hex[:16]
        self.profile = profile
        self.repo = repo
        self.isolation = mode
        self.labels = dict(labels or {})
        self.dir = root / self.id
        self.workdir = WORKSPACE if mode != MODE_COPY else str(self.dir / "workspace")
        self.started_at = utc_now()
        self.ended_at: dt.datetime | None = None
        self.killed_reason: str | None = None
        self.commands_run = 0
        self._cpu_from_rusage = 0.0
        self._cpu_s: float | None = None
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False
        self._cgroups = CgroupSet({})
        self._etc = etc
        self.hidden = hidden
        self.aliases = aliases
        self._limit_disk = limit_disk
        self._disk: Path | None = None  # the tmpfs mount point, once mounted
        self.dir.mkdir()
        try:
            self._setup()
        except BaseException:
            if self._disk is not None:
                disk_mod.unmount(self._disk)
            self._cgroups.remove()
            remove_tree(self.dir)
            raise

    # -- creation ------------------------------------------------------------------------

    def _setup(self) -> None:
        p = self.profile
        if cgroups_available():  # the disk's pages are memory, charged to the sandbox too
            memory_mb = p.memory_mb + (p.disk_mb if self._limit_disk else 0)
            self._cgroups = CgroupSet.create(self.id, memory_bytes=memory_mb << 20, max_pids=p.max_processes)
        if self.isolation == MODE_OVERLAY:
            disk = self.dir / "disk"
            disk.mkdir()
            (self.dir / "merged").mkdir()
            if self._limit_disk:
                disk_mod.mount(disk, p.disk_mb)
                self._disk = disk
            (disk / "upper").mkdir()
            (disk / "work").mkdir()
            os.symlink(self.repo, self.dir / "lower")
            self.view = LayerView(disk / "upper", self.repo, hidden=self.hidden)
            for rel in self.hidden:
                self.view.hide(rel)
        else:
            copy = self.dir / "workspace"
            copy.mkdir()
            if self._limit_disk:  # the copy, then disk_mb more
                disk_mod.mount(copy, None)
                self._disk = copy
            shutil.copytree(self.repo, copy, symlinks=True, dirs_exist_ok=True,
                            ignore=self._not_copied if self.hidden else None)
            if self._disk is not None:
                disk_mod.resize(copy, p.disk_mb)
            self.view = LayerView(copy, hidden=self.hidden)
        if self.isolation == MODE_COPY:
            (self.dir / "home").mkdir()
        register(self.dir, {"id": self.id, **owner_record(), "created_at": self.started_at.isoformat(),
                            "repo": str(self.repo), "mode": self.isolation, "profile": p.name,
                            "labels": self.labels, "disk": str(self._disk) if self._disk else None,
                            "cgroups": {k: str(v) for k, v in self._cgroups.paths.items()}})
        self._script = setup_script(directory=self.dir, profile=p, cgroups=self._cgroups,
                                    overlay=self.isolation == MODE_OVERLAY, copy=self.isolation == MODE_COPY,
                                    repo=self.repo)
        self._base_env = self._build_env()
        if self.isolation != MODE_COPY:
            workspace = str(self.dir / ("merged" if self.isolation == MODE_OVERLAY else "workspace"))
            self._bwrap = ["bwrap", *system_args(p.network, self._etc), "--size", str(p.memory_mb << 20),
                           "--tmpfs", "/tmp", *python_args(), "--bind", workspace, WORKSPACE,
                           *[arg for link in self.aliases for arg in ("--symlink", WORKSPACE, link)],
                           "--remount-ro", "/",
                           "--chdir", WORKSPACE, "--clearenv"]

    def _not_copied(self, directory: str, names: list[str]) -> set[str]:
        rel = os.path.relpath(directory, self.repo)
        prefix = "" if rel == "." else rel + "/"
        return {name for name in names if is_hidden(prefix + name, self.hidden)}

    def _disk_full(self) -> bool:
        return self._disk is not None and disk_mod.full(self._disk)

    def _build_env(self) -> dict[str, str]:
        p = self.profile
        tmp = "/tmp" if self.isolation != MODE_COPY else str(self.dir / "home")
        env = {"PATH": f"{python_bin()}:{HOST_PATH}", "HOME": tmp, "TMPDIR": tmp, "LANG": "C.UTF-8",
               "TERM": "dumb", MARKER_ENV: self.id}
        env.update(p.env)
        env.update({k: os.environ[k] for k in p.env_passthrough if k in os.environ})
        return env

    # -- commands ------------------------------------------------------------------------

    def _argv(self, cmd: str | list[str], env: Mapping[str, str]) -> list[str]:
        command = [BASH, "-c", cmd] if isinstance(cmd, str) else list(cmd)
        if not command:
            raise SandboxError("empty command")
        head = ["/bin/sh", "-c", self._script, "sh"]
        if self.isolation == MODE_OVERLAY:
            head = ["unshare", "-m", "--propagation", "private", *head]
        if self.isolation == MODE_COPY:
            return [*head, *command]
        setenv: list[str] = []
        for key, value in env.items():
            setenv += ["--setenv", key, value]
        return [*head, *self._bwrap, *setenv, "--", *command]

    def run(self, cmd: str | list[str], *, timeout: float | None = None,
            env: Mapping[str, str] | None = None) -> CommandResult:
        """Run ``cmd`` (a shell string or an argv list) in the workspace and wait for it."""
        with self._lock:
            self._check_open()
            full_env = self._env(env)
            return self._run_locked(self._argv(cmd, full_env), full_env,
                                    self.profile.wall_timeout_s if timeout is None else timeout)

    def _env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        extra = {str(k): str(v) for k, v in (env or {}).items()}
        bad = [k for k in extra if not _ENV_NAME.match(k) or "\0" in extra[k]]
        if bad:
            raise SandboxError(f"invalid environment variable for the sandbox: {bad[0]!r}")
        return {**self._base_env, **extra}

    @contextmanager
    def process(self, cmd: str | list[str], *, env: Mapping[str, str] | None = None,
                stdin: bool = False) -> Iterator[subprocess.Popen[bytes]]:
        """Start ``cmd`` in the workspace with piped output (and stdin if asked), for callers that
        stream it (the E2B server). The sandbox runs nothing else until the block ends; leaving it
        kills what is left of the command. Limits come from the setup script and the cgroups;
        the wall time is the caller's to enforce."""
        with self._lock:
            self._check_open()
            full_env = self._env(env)
            proc = self._spawn(self._argv(cmd, full_env), full_env, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            self._proc = proc
            try:
                yield proc
            finally:
                if proc.poll() is None:
                    self._kill(proc)
                proc.wait()
                self._proc = None
                self._reap_leftovers(proc)
                self.commands_run += 1

    def _spawn(self, argv: list[str], env: dict[str, str], *, stdin: Any, stdout: Any,
               stderr: Any) -> subprocess.Popen[bytes]:
        """Start ``argv``. Isolated, the host side gets a bare environment (the command's own is
        set inside); in copy mode the command runs on the host, in a session of its own."""
        copy_mode = self.isolation == MODE_COPY
        host_env = env if copy_mode else {"PATH": HOST_PATH, "LC_ALL": "C", MARKER_ENV: self.id}
        return subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, env=host_env,
                                start_new_session=copy_mode)

    def _run_locked(self, argv: list[str], env: dict[str, str], timeout: float) -> CommandResult:
        groups = self._cgroups
        oom0, refused0, cpu0 = groups.oom_kills(), groups.pids_refused(), groups.cpu_s()
        full0 = self._disk_full()
        out_path, err_path = self.dir / "stdout", self.dir / "stderr"
        started = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            proc = self._spawn(argv, env, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        self._proc = proc
        deadline = started + max(0.0, timeout)

        def over_limit() -> str | None:
            if groups.pids_refused() > refused0:
                return "processes"
            cpu = groups.cpu_s()
            if cpu is not None and cpu0 is not None and cpu - cpu0 > self.profile.cpu_time_s:
                return "cpu"
            return None

        try:
            status, usage, reason = wait_for(proc.pid, deadline, over_limit, lambda: self._kill(proc))
        except BaseException:
            self._kill(proc)
            os.wait4(proc.pid, 0)
            raise
        finally:
            self._proc = None
        duration = time.monotonic() - started
        proc.returncode = code = os.waitstatus_to_exitcode(status)
        self._cpu_from_rusage += usage.ru_utime + usage.ru_stime
        self._reap_leftovers(proc)
        stdout, stderr = read_output(out_path), read_output(err_path)
        if setup_failed(code, stderr):
            raise SandboxError(f"sandbox {self.id} could not start the command: {stderr.strip()}")
        exit_code = 128 - code if code < 0 else code
        if reason is None:  # a disk that was full before counts only if this command failed
            full = self._disk_full() and (exit_code != 0 or not full0)
            reason = kill_reason(exit_code, stderr, self._cgroups, oom0=oom0, refused0=refused0, disk_full=full)
        self.commands_run += 1
        if reason is not None:
            self.killed_reason = reason
        return CommandResult(exit_code=exit_code, stdout=stdout, stderr=stderr, duration_s=duration,
                             killed=reason is not None, killed_reason=reason)

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        try:
            if self.isolation == MODE_COPY:
                os.killpg(proc.pid, signal.SIGKILL)
            else:  # bwrap's --die-with-parent takes the whole PID namespace down with it
                os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._cgroups.kill_all()

    def _reap_leftovers(self, proc: subprocess.Popen[bytes]) -> None:
        if self._cgroups.paths:
            if self._cgroups.pids():
                self._cgroups.kill_all()
        elif self.isolation == MODE_COPY:  # nothing else contains a daemon here
            for pid in processes_with_marker({self.id}):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # -- files ---------------------------------------------------------------------------

    def write_files(self, files: Mapping[str, str | bytes]) -> None:
        """Create or replace files (paths relative to the workspace or under /workspace)."""
        with self._lock:
            self._check_open()
            for path, content in files.items():
                try:
                    self.view.write_bytes(path, content.encode() if isinstance(content, str) else content)
                except OSError as exc:
                    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                        raise
                    self.killed_reason = "disk"
                    raise SandboxError(f"sandbox {self.id}: disk limit of {self.profile.disk_mb} MB reached "
                                       f"writing {path}") from exc

    def read_bytes(self, path: str) -> bytes:
        """The bytes of a file as the sandbox sees it."""
        with self._lock:
            self._check_open()
            return self.view.read_bytes(path)

    def read_file(self, path: str) -> str:
        """The text of a file as the sandbox sees it (undecodable bytes replaced)."""
        return self.read_bytes(path).decode("utf-8", errors="replace")

    def diff(self) -> str:
        """The attempt's change against the repository as a unified git diff (binary-safe)."""
        with self._lock:
            self._check_open()
            if self.isolation == MODE_OVERLAY:
                return diff_overlay(self.view, self.dir / "diff", ignored=self._ignored)
            return diff_copy(self.repo, self.dir / "workspace", self.dir / "diff", ignored=self._ignored,
                             hidden=self.hidden)

    def _ignored(self, paths: list[str]) -> set[str]:
        # asked inside the sandbox, where git sees the workspace's own .gitignore files (e.g. the
        # one pytest puts in .pytest_cache), as `git add -A` would; never git on the host in a
        # tree the attempt controls
        listing = f"{_ARTEFACTS}/untracked.lst"
        try:
            self.view.write_bytes(listing, b"\0".join(p.encode() for p in paths) + b"\0")
        except (OSError, SandboxError):  # the attempt turned .fibreflow into something else
            return set()
        try:
            res = self._run_locked(self._argv(f"git check-ignore --stdin -z < {listing}", self._base_env),
                                   self._base_env, 60.0)
        finally:
            self.view.remove(listing)
        if res.exit_code not in (0, 1):  # 128: not a git repository, nothing is ignored
            return set()
        return {p for p in res.stdout.split("\0") if p}

    def _check_open(self) -> None:
        if self._closed:
            raise SandboxError(f"sandbox {self.id} is closed")

    # -- accounting and cleanup ------------------------------------------------------------

    @property
    def cpu_seconds(self) -> float:
        """CPU seconds all commands of this sandbox used."""
        if self._cpu_s is not None:
            return self._cpu_s
        cg = self._cgroups.cpu_s()
        return cg if cg is not None else self._cpu_from_rusage

    def close(self) -> None:
        """Kill whatever runs, remove cgroups, then the layers and directory. Safe to call twice.

        The directory is renamed away at once and deleted by a background thread
        (``LocalBackend.drain()`` waits for it; so does interpreter exit).
        """
        proc = self._proc
        if proc is not None:
            self._kill(proc)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._cpu_s = self.cpu_seconds
            self._cgroups.kill_all()
            self._cgroups.remove()
            if self._disk is not None:  # detached at once; its memory is freed when the last user goes
                disk_mod.unmount(self._disk)
            janitor.remove(self.dir)
            self.ended_at = utc_now()

    def __enter__(self) -> LocalSandbox:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<LocalSandbox {self.id} {self.isolation} profile={self.profile.name}>"


class LocalBackend:
    """Creates local sandboxes; reaps what crashed processes left behind when it starts."""

    name = "local"

    def __init__(self, *, state_dir: str | Path | None = None, isolation: str | None = None,
                 reap: bool = True, hidden_paths: Iterable[str | Path] = ()) -> None:
        """``state_dir`` defaults to ``Settings.state_dir``. Sandboxes never see the state
        directory nor the configured store (``Settings.db_path``) and its companion files;
        ``hidden_paths`` names more files or directories to keep from them (another store:
        ``fibreflow.sandbox.base.store_files(path)``)."""
        from fibreflow.config import load_settings

        settings = load_settings()
        if state_dir is None:
            state_dir = settings.state_dir
        self.root = Path(state_dir).expanduser().resolve() / "sandboxes"
        self.state = self.root.parent
        self.hidden = tuple(dict.fromkeys([*store_files(settings.db_path),
                                           *(Path(p).expanduser().resolve() for p in hidden_paths)]))
        self.mode = _ALIASES.get(isolation, isolation) if isolation else isolation_mode()
        if self.mode not in MODES:
            raise SandboxError(f"unknown isolation mode {self.mode!r} (known: {', '.join(MODES)})")
        if self.mode == MODE_OVERLAY and isolation is not None and isolation_mode() != MODE_OVERLAY:
            raise SandboxError(f"isolation {MODE_OVERLAY} is not available here ({isolation_mode()})")
        if self.mode != MODE_OVERLAY:
            message = (f"fibreflow sandboxes run with reduced isolation: {self.mode} "
                       f"(best here: {isolation_mode()})")
            if self.mode == MODE_COPY:
                message += ("; commands run on the host with only rlimits and cgroups around them, and can "
                            "read whatever the host holds (the store, other sandboxes)")
            log.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        self.limit_disk = disk_mod.available()
        if not self.limit_disk:
            message = ("fibreflow sandboxes have no disk limit here (mounting a tmpfs needs root): disk_mb "
                       "does not apply, only max_file_size_mb bounds each file")
            log.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        self.root.mkdir(parents=True, exist_ok=True)
        self.alternates = self._alternate_roots()
        try:
            self.home: Path | None = Path.home().resolve()
        except (KeyError, RuntimeError):  # no HOME and no passwd entry
            self.home = None
        # never shown to a sandbox, wherever they lie: the state, the fallbacks, home, the store
        self._private = tuple(dict.fromkeys([self.state, *(root.parent for root in self.alternates),
                                             *([self.home] if self.home else []), *self.hidden]))
        self.etc = prepare_etc(self.root.parent / "sysroot") if self.mode != MODE_COPY else None
        self.last_reap: ReapReport | None = self.reap() if reap else None

    def _alternate_roots(self) -> list[Path]:
        """Where sandboxes of a repository that contains the state directory go, best first."""
        roots: list[Path] = []
        for base in (os.environ.get("TMPDIR") or "/tmp", "/tmp", "/var/tmp"):
            root = Path(base).expanduser().resolve() / f"fibreflow-{os.geteuid()}" / "sandboxes"
            if root not in roots:
                roots.append(root)
        return roots

    def drain(self) -> None:
        """Wait until closed sandboxes' directories are deleted (``close`` queues that work)."""
        janitor.drain()

    def reap(self) -> ReapReport:
        """Reclaim sandboxes of dead owner processes under this backend's state directories."""
        report = reap_orphans(self.root)
        for alternate in self.alternates:
            if alternate == self.root or not alternate.exists():
                continue
            extra = reap_orphans(alternate)
            for key, value in vars(extra).items():
                current = getattr(report, key)
                setattr(report, key, current + value)
        return report

    def reap_finished_runs(self, store: StoreReader | None = None) -> list[str]:
        """Nothing to kill: a local sandbox's processes end with each command, and ``reap()``
        reclaims what dead owner processes left when a backend starts."""
        return []

    def _root_for(self, repo: Path) -> Path:
        # an overlay's upper layer must not lie inside its lower layer (nor a copy inside what it
        # copies): a repository that contains the state directory gets its layers elsewhere
        if not self.root.is_relative_to(repo):
            return self.root
        tried = []
        for root in self.alternates:
            tried.append(str(root))
            if root.is_relative_to(repo) or repo.is_relative_to(root):
                continue
            try:
                root.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                st = os.lstat(root.parent)
                if not os.path.isdir(root.parent) or os.path.islink(root.parent) or st.st_uid != os.geteuid():
                    continue  # someone else's (or a planted link): not a place for our layers
                root.mkdir(exist_ok=True)
            except OSError:
                continue
            return root
        raise SandboxError(f"repository {repo} contains the sandbox state directory {self.state}, and no "
                           f"fallback for the sandbox layers lies outside it (tried {', '.join(tried)}): set "
                           "state_dir in fibreflow.yaml (or XDG_STATE_HOME, or TMPDIR) to a directory "
                           "outside the repository")

    def _masked(self, repo: Path) -> tuple[str, ...]:
        """Workspace paths to hide from sandboxes of ``repo``: the private paths inside it."""
        return hidden_within(repo, self._private)

    def create(self, repo: str | Path, profile: SandboxProfile | str = "python-tests", *,
               labels: Mapping[str, str] | None = None, aliases: tuple[str, ...] = ()) -> LocalSandbox:
        """A new sandbox over ``repo`` with ``profile``'s limits; ``aliases``: more paths at which
        its commands see the workspace."""
        from fibreflow.sandbox.profiles import load_profile

        repo_path = Path(repo).expanduser().resolve()
        if not repo_path.is_dir():
            raise SandboxError(f"{repo}: not a directory")
        for private in (self.state, *(root.parent for root in self.alternates)):
            if repo_path.is_relative_to(private):
                raise SandboxError(f"{repo}: lies inside the sandbox state directory {private}")
        if repo_path == self.home:
            raise SandboxError(f"{repo}: is the home directory; an attempt would see its keys and "
                               "settings: give the project's directory")
        return LocalSandbox(root=self._root_for(repo_path), repo=repo_path, profile=load_profile(profile),
                            mode=self.mode, etc=self.etc, labels=labels, hidden=self._masked(repo_path),
                            limit_disk=self.limit_disk, aliases=aliases)

    def info(self) -> dict[str, Any]:
        """What this backend runs with."""
        return {"backend": self.name, "isolation": self.mode, "state_dir": str(self.root),
                "cgroups": list(cgroups_available()), "disk_limit": "tmpfs" if self.limit_disk else None}

