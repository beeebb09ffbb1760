"""A real ``fibreflow store serve`` subprocess on a free loopback port, for the server tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fibreflow.store.discovery import record_path, token_path

STARTUP_S = 120.0  # a generous bound on a shared 2-core machine; not a speed claim


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_env(db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIBREFLOW_")}
    env.update(FIBREFLOW_DB=str(db), FIBREFLOW_ENV_FILE=str(db.parent / "absent.env"), **extra)
    return env


@dataclass
class Served:
    """A running server: its process, port, file and log."""

    proc: subprocess.Popen[str]
    port: int
    db: Path
    log: Path

    @property
    def url(self) -> str:
        return f"quack://127.0.0.1:{self.port}"

    def token(self) -> str:
        return token_path(self.db).read_text().strip()

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=STARTUP_S)


def start_server(db: Path, *, port: int | None = None, env: dict[str, str] | None = None) -> Served:
    """Start ``fibreflow store serve`` for ``db`` and wait until its record names it."""
    port = port or free_port()
    log = db.with_name(f"serve-{port}.log")
    out = open(log, "w")
    proc = subprocess.Popen([sys.executable, "-m", "fibreflow.cli", "store", "serve", "--port", str(port)],
                            env=env or serve_env(db), cwd=db.parent, stdout=out, stderr=subprocess.STDOUT, text=True)
    out.close()
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"store serve exited {proc.returncode}: {log.read_text()}")
        try:
            if json.loads(record_path(db).read_text()).get("pid") == proc.pid:
                return Served(proc, port, db, log)
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"store serve did not start: {log.read_text()}")
