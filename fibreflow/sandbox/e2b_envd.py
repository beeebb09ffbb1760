"""envd inside a served sandbox: the process and filesystem services and the ``/files`` transfers.

The services implement the ``e2b`` SDK's own generated Connect protocols (``ProcessSync``,
``FilesystemSync``) over a ``ServedSandbox``: a command runs through
``LocalSandbox.process`` with its output streamed as it comes (start, data, keepalive, end
events), stdin on request, ``SendSignal`` killing it. A sandbox runs one command at a time (its
overlay is mounted per command); a second command waits for the first. Paths are E2B's: absolute
under ``/home/user`` (the workspace) or relative to it; anything else is refused, since nothing
outside the workspace outlives a command here. A sandbox killed while its command runs ends the
stream with ``UNAVAILABLE``; the SDK's health probe then finds it gone, as with E2B's cloud.
"""

from __future__ import annotations

import os
import posixpath
import queue
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from typing import IO, Any, Literal

from connectrpc.code import Code
from connectrpc.errors import ConnectError
from connectrpc.request import RequestContext
from e2b.envd.filesystem import filesystem_pb as fs_pb
from e2b.envd.filesystem.filesystem_connect import FilesystemSync
from e2b.envd.process import process_pb as pb
from e2b.envd.process.process_connect import ProcessSync
from protobuf import Oneof

from fibreflow.errors import SandboxError
from fibreflow.sandbox.e2b_pool import HOME, SandboxGone, SandboxPool, ServedSandbox

KEEPALIVE_S = 10.0  # also how soon a client that went away is noticed
SANDBOX_HEADER = "e2b-sandbox-id"
_EOF = object()
# the SDK's generated oneof types, spelled out: mypy cannot narrow a literal through their union
_Start = Oneof[Literal["start"], pb.ProcessEvent.StartEvent]
_End = Oneof[Literal["end"], pb.ProcessEvent.EndEvent]
_KeepAlive = Oneof[Literal["keepalive"], pb.ProcessEvent.KeepAlive]
_Data = Oneof[Literal["data"], pb.ProcessEvent.DataEvent]


def workspace_path(path: str) -> str:
    """``path`` (absolute, or relative to ``/home/user``) as a workspace-relative path ("" = home)."""
    full = posixpath.normpath(posixpath.join(HOME, path))
    if full == HOME:
        return ""
    if not full.startswith(HOME + "/"):
        raise SandboxError(f"path {path!r}: this server keeps files under {HOME} only")
    return full[len(HOME) + 1:]


def served_sandbox(pool: SandboxPool, ctx: RequestContext[Any, Any]) -> ServedSandbox:
    """The sandbox a request's ``E2b-Sandbox-Id`` header names; UNAVAILABLE as the cloud answers
    for one that is gone."""
    sandbox_id = ctx.request_headers.get(SANDBOX_HEADER, "")
    try:
        return pool.get(sandbox_id)
    except SandboxGone as exc:
        raise ConnectError(Code.UNAVAILABLE, f"The sandbox {sandbox_id} was not found") from exc


@dataclass
class RunningCommand:
    """A command of a sandbox while it runs: what ``List``, ``SendInput`` and ``SendSignal`` reach."""

    config: pb.ProcessConfig
    tag: str | None
    stdin: IO[bytes] | None
    kill: Any


class ProcessService(ProcessSync):
    """``process.Process``: start commands with streamed output, stdin, kill, list."""

    def __init__(self, pool: SandboxPool) -> None:
        self.pool = pool
        self._running: dict[tuple[str, int], RunningCommand] = {}
        self._lock = threading.Lock()

    def _served(self, ctx: RequestContext[Any, Any]) -> ServedSandbox:
        return served_sandbox(self.pool, ctx)

    def start(self, request: pb.StartRequest, ctx: RequestContext[pb.StartRequest, pb.StartResponse]
              ) -> Iterator[pb.StartResponse]:
        served = self._served(ctx)
        cfg = request.process or pb.ProcessConfig(cmd="/bin/bash")
        if request.pty is not None:
            raise ConnectError(Code.UNIMPLEMENTED, "this server has no pseudo-terminals")
        cwd = cfg.cwd if cfg.has_field("cwd") and cfg.cwd else HOME
        try:
            rel = workspace_path(cwd)
            if rel and not served.box.view.lookup(served.box.view.resolve(rel)):
                raise FileNotFoundError(cwd)
        except (SandboxError, FileNotFoundError) as exc:
            raise ConnectError(Code.INVALID_ARGUMENT, f"cwd '{cwd}' does not exist: {exc}") from exc
        env = {"HOME": HOME, "USER": "user", **served.envs, **dict(cfg.envs)}
        argv = ["/bin/sh", "-c", 'cd "$1" && shift && exec "$@"', "sh", cwd, cfg.cmd, *cfg.args]
        stdin = request.stdin if request.has_field("stdin") else True
        interval = min(KEEPALIVE_S, float(ctx.request_headers.get("keepalive-ping-interval") or KEEPALIVE_S))
        try:
            with served.box.process(argv, env=env, stdin=stdin) as proc:
                key = (served.sandbox_id, proc.pid)
                with self._lock:
                    self._running[key] = RunningCommand(cfg, request.tag if request.has_field("tag") else None,
                                                        proc.stdin, proc.kill)
                try:
                    started: _Start = Oneof("start", pb.ProcessEvent.StartEvent(pid=proc.pid))
                    yield pb.StartResponse(event=pb.ProcessEvent(event=started))
                    yield from _stream(proc, ctx, interval)
                    code = proc.wait()
                finally:
                    with self._lock:
                        self._running.pop(key, None)
        except SandboxError as exc:  # closed before the command could start
            raise ConnectError(Code.UNAVAILABLE, f"The sandbox {served.sandbox_id} was not found: {exc}") from exc
        if not served.alive:
            raise ConnectError(Code.UNAVAILABLE, f"sandbox {served.sandbox_id} was killed while the command ran")
        exit_code = 128 - code if code < 0 else code
        end: _End = Oneof("end", pb.ProcessEvent.EndEvent(exit_code=exit_code, exited=True,
                                                          status=f"exit status {exit_code}"))
        yield pb.StartResponse(event=pb.ProcessEvent(event=end))

    def _command(self, request: Any, ctx: RequestContext[Any, Any]) -> RunningCommand:
        served = self._served(ctx)
        selector = request.process.selector if request.process is not None else None
        with self._lock:
            for (sandbox_id, pid), running in self._running.items():
                if sandbox_id != served.sandbox_id:
                    continue
                if selector == Oneof("pid", pid) or (running.tag and selector == Oneof("tag", running.tag)):
                    return running
        raise ConnectError(Code.NOT_FOUND, f"process {selector} not found")

    def list(self, request: pb.ListRequest, ctx: RequestContext[pb.ListRequest, pb.ListResponse]) -> pb.ListResponse:
        served = self._served(ctx)
        with self._lock:
            found = [pb.ProcessInfo(config=r.config, pid=pid, tag=r.tag)
                     for (sandbox_id, pid), r in self._running.items() if sandbox_id == served.sandbox_id]
        return pb.ListResponse(processes=found)

    def send_input(self, request: pb.SendInputRequest,
                   ctx: RequestContext[pb.SendInputRequest, pb.SendInputResponse]) -> pb.SendInputResponse:
        running = self._command(request, ctx)
        data = request.input.input if request.input is not None else None
        if running.stdin is None or running.stdin.closed:
            raise ConnectError(Code.FAILED_PRECONDITION, "the command's stdin is not open (start it with stdin=True)")
        if data is not None and data.field == "stdin":
            try:
                running.stdin.write(data.value)
                running.stdin.flush()
            except (BrokenPipeError, ValueError) as exc:
                raise ConnectError(Code.FAILED_PRECONDITION, f"the command's stdin is closed: {exc}") from exc
        return pb.SendInputResponse()

    def close_stdin(self, request: pb.CloseStdinRequest,
                    ctx: RequestContext[pb.CloseStdinRequest, pb.CloseStdinResponse]) -> pb.CloseStdinResponse:
        running = self._command(request, ctx)
        if running.stdin is not None:
            running.stdin.close()
        return pb.CloseStdinResponse()

    def send_signal(self, request: pb.SendSignalRequest,
                    ctx: RequestContext[pb.SendSignalRequest, pb.SendSignalResponse]) -> pb.SendSignalResponse:
        # SIGTERM kills too: the command's PID namespace ends with its bubblewrap process
        self._command(request, ctx).kill()
        return pb.SendSignalResponse()


def _stream(proc: Any, ctx: RequestContext[Any, Any], interval: float) -> Iterator[pb.StartResponse]:
    """Data events as the command writes, keepalives while it is quiet; stops at the deadline."""
    chunks: queue.Queue[tuple[str, Any]] = queue.Queue()

    def pump(name: str, pipe: IO[bytes]) -> None:
        fd = pipe.fileno()
        for chunk in iter(lambda: os.read(fd, 65536), b""):
            chunks.put((name, chunk))
        chunks.put((name, _EOF))

    readers = [threading.Thread(target=pump, args=(n, p), daemon=True, name=f"envd-{n}")
               for n, p in (("stdout", proc.stdout), ("stderr", proc.stderr))]
    for reader in readers:
        reader.start()
    open_pipes = 2
    while open_pipes:
        left = ctx.timeout_ms
        wait = interval if left is None else min(interval, max(0.0, left / 1000))
        try:
            name, chunk = chunks.get(timeout=wait)
        except queue.Empty:
            if left is not None and left <= wait * 1000:
                proc.kill()
                raise ConnectError(Code.DEADLINE_EXCEEDED, "the command's timeout passed; it was killed") from None
            keepalive: _KeepAlive = Oneof("keepalive", pb.ProcessEvent.KeepAlive())
            yield pb.StartResponse(event=pb.ProcessEvent(event=keepalive))
            continue
        if chunk is _EOF:
            open_pipes -= 1
            continue
        data: _Data = Oneof("data", _data(name, chunk))
        yield pb.StartResponse(event=pb.ProcessEvent(event=data))


def _data(name: str, chunk: bytes) -> pb.ProcessEvent.DataEvent:
    if name == "stdout":
        stdout: Oneof[Literal["stdout"], bytes] = Oneof("stdout", chunk)
        return pb.ProcessEvent.DataEvent(output=stdout)
    stderr: Oneof[Literal["stderr"], bytes] = Oneof("stderr", chunk)
    return pb.ProcessEvent.DataEvent(output=stderr)


class FilesystemService(FilesystemSync):
    """``filesystem.Filesystem``: stat, list, make, move and remove under ``/home/user``."""

    def __init__(self, pool: SandboxPool) -> None:
        self.pool = pool

    def _served(self, ctx: RequestContext[Any, Any]) -> ServedSandbox:
        return served_sandbox(self.pool, ctx)

    def _entry(self, served: ServedSandbox, path: str) -> fs_pb.EntryInfo:
        try:
            rel = workspace_path(path)
            view = served.box.view
            found = view.lookup(view.resolve(rel))
        except SandboxError as exc:
            raise ConnectError(Code.INVALID_ARGUMENT, str(exc)) from exc
        except FileNotFoundError:
            found = None
        if found is None:
            raise ConnectError(Code.NOT_FOUND, f"path '{path}' does not exist")
        return _info(rel, found[1])

    def stat(self, request: fs_pb.StatRequest, ctx: RequestContext[fs_pb.StatRequest, fs_pb.StatResponse]
             ) -> fs_pb.StatResponse:
        return fs_pb.StatResponse(entry=self._entry(self._served(ctx), request.path))

    def list_dir(self, request: fs_pb.ListDirRequest,
                 ctx: RequestContext[fs_pb.ListDirRequest, fs_pb.ListDirResponse]) -> fs_pb.ListDirResponse:
        served = self._served(ctx)
        top = self._entry(served, request.path)
        if top.type != fs_pb.FileType.DIRECTORY:
            raise ConnectError(Code.INVALID_ARGUMENT, f"path '{request.path}' is not a directory")
        entries: list[fs_pb.EntryInfo] = []
        todo = [(workspace_path(request.path), 1)]
        view = served.box.view
        while todo:
            rel, depth = todo.pop()
            parts = view.resolve(rel) if rel else []
            names: set[str] = set()
            for base in (view.upper, view.lower):
                if base is not None and os.path.isdir(base.joinpath(*parts)):
                    names.update(os.listdir(base.joinpath(*parts)))
            for name in sorted(names):
                found = view.lookup([*parts, name])
                if found is None or (not rel and name == ".fibreflow"):
                    continue
                child = posixpath.join(rel, name) if rel else name
                entries.append(_info(child, found[1]))
                if stat.S_ISDIR(found[1].st_mode) and depth < max(1, request.depth):
                    todo.append((child, depth + 1))
        return fs_pb.ListDirResponse(entries=entries)

    def _shell(self, ctx: RequestContext[Any, Any], script: str, *paths: str) -> ServedSandbox:
        served = self._served(ctx)
        try:
            for path in paths:
                workspace_path(path)
        except SandboxError as exc:
            raise ConnectError(Code.INVALID_ARGUMENT, str(exc)) from exc
        full = [posixpath.normpath(posixpath.join(HOME, p)) for p in paths]
        result = served.box.run(["/bin/sh", "-c", script, "sh", *full], timeout=60)
        if result.exit_code == 3:
            raise ConnectError(Code.ALREADY_EXISTS, f"path '{paths[0]}' already exists")
        if result.exit_code == 4:
            raise ConnectError(Code.NOT_FOUND, f"path '{paths[0]}' does not exist")
        if result.exit_code != 0:
            raise ConnectError(Code.INTERNAL, result.stderr.strip()[-500:] or f"exit {result.exit_code}")
        return served

    def make_dir(self, request: fs_pb.MakeDirRequest,
                 ctx: RequestContext[fs_pb.MakeDirRequest, fs_pb.MakeDirResponse]) -> fs_pb.MakeDirResponse:
        served = self._shell(ctx, '[ -e "$1" ] && exit 3; mkdir -p "$1"', request.path)
        return fs_pb.MakeDirResponse(entry=self._entry(served, request.path))

    def remove(self, request: fs_pb.RemoveRequest,
               ctx: RequestContext[fs_pb.RemoveRequest, fs_pb.RemoveResponse]) -> fs_pb.RemoveResponse:
        self._shell(ctx, '[ -e "$1" ] || [ -L "$1" ] || exit 4; rm -rf "$1"', request.path)
        return fs_pb.RemoveResponse()

    def move(self, request: fs_pb.MoveRequest, ctx: RequestContext[fs_pb.MoveRequest, fs_pb.MoveResponse]
             ) -> fs_pb.MoveResponse:
        served = self._shell(ctx, '[ -e "$1" ] || exit 4; mv -T "$1" "$2"', request.source, request.destination)
        return fs_pb.MoveResponse(entry=self._entry(served, request.destination))


def _info(rel: str, st: os.stat_result) -> fs_pb.EntryInfo:
    kind = (fs_pb.FileType.DIRECTORY if stat.S_ISDIR(st.st_mode) else
            fs_pb.FileType.SYMLINK if stat.S_ISLNK(st.st_mode) else fs_pb.FileType.FILE)
    return fs_pb.EntryInfo(name=posixpath.basename(rel) or posixpath.basename(HOME), type=kind,
                           path=posixpath.join(HOME, rel) if rel else HOME, size=st.st_size,
                           mode=stat.S_IMODE(st.st_mode), permissions=stat.filemode(st.st_mode),
                           owner="user", group="user", is_symlink=stat.S_ISLNK(st.st_mode))


# -- /files: uploads and downloads over plain HTTP --------------------------------------------


def read_file(served: ServedSandbox, path: str) -> bytes:
    """A file's bytes; FileNotFoundError, or SandboxError for a path that is not a readable file."""
    return served.box.read_bytes(workspace_path(path))


def write_files(served: ServedSandbox, content_type: str, body: bytes, path: str | None) -> list[dict[str, str]]:
    """Write an upload (multipart/form-data, or one octet-stream file at ``path``); the SDK's
    ``WriteInfo`` records of what was written."""
    files: dict[str, bytes] = {}
    if content_type.split(";")[0].strip().lower() == "multipart/form-data":
        message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        for part in message.iter_parts():
            name = path if path else part.get_filename()
            if not name:
                raise SandboxError("an uploaded part names no file (filename) and the request no path")
            payload = part.get_payload(decode=True)
            files[name] = payload if isinstance(payload, bytes) else b""
    else:
        if not path:
            raise SandboxError("an octet-stream upload needs the path parameter")
        files[path] = body
    served.box.write_files({workspace_path(name): data for name, data in files.items()})
    full = [posixpath.normpath(posixpath.join(HOME, name)) for name in files]
    return [{"name": posixpath.basename(p), "type": "file", "path": p} for p in full]


__all__ = ["FilesystemService", "ProcessService", "read_file", "workspace_path", "write_files"]
