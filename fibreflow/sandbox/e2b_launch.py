"""``fibreflow sandbox serve`` as a child process, for the benchmarks and the tests: a free port, the
API key handed over in the child's environment (never its argv), the URL read from the first
line it prints, SIGTERM to stop it."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from types import TracebackType

from fibreflow.errors import SandboxError

KEY_ENV = "FIBREFLOW_SANDBOX_SERVER_KEY"
_URL = re.compile(r"on (http://\S+) ")


class ServerProcess:
    """A running ``fibreflow sandbox serve``; ``url`` and ``api_key`` are what the e2b backend needs."""

    def __init__(self, *args: str, api_key: str | None = None, env: Mapping[str, str | None] | None = None,
                 start_timeout_s: float = 60.0) -> None:
        """``args``: more options for ``serve`` (e.g. ``--fail-creates 3``, ``--profile quick``);
        ``env``: changes to this process's environment for the server (None removes a variable)."""
        self.api_key = api_key or secrets.token_urlsafe(18)
        self.env = dict(env or {})
        self.args: Sequence[str] = args
        self.start_timeout_s = start_timeout_s
        self.url = ""
        self._proc: subprocess.Popen[str] | None = None
        self._drain: threading.Thread | None = None
        self.stderr_lines: list[str] = []

    def start(self) -> ServerProcess:
        """Start the server and wait until it says where it listens."""
        env = {**os.environ, **{k: v for k, v in self.env.items() if v is not None}, KEY_ENV: self.api_key}
        for name in [k for k, v in self.env.items() if v is None]:
            env.pop(name, None)
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "fibreflow.cli", "sandbox", "serve", "--port", "0", "--key-env", KEY_ENV,
             *self.args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        stdout = self._proc.stdout
        if stdout is None:
            raise SandboxError("fibreflow sandbox serve: no stdout to read its address from")
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(self.start_timeout_s)
        self._drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self._drain.start()
        found = _URL.search(first[0]) if first else None
        if found is None:
            self.stop()
            raise SandboxError(f"fibreflow sandbox serve did not start: {''.join(self.stderr_lines)[-1000:]}")
        self.url = found.group(1)
        return self

    def _drain_stderr(self) -> None:
        proc = self._proc
        if proc is not None and proc.stderr is not None:
            for line in proc.stderr:
                self.stderr_lines.append(line)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 20 s; the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._drain is not None:
            self._drain.join(5)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
        return proc.returncode

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


__all__ = ["KEY_ENV", "ServerProcess"]
