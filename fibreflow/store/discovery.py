"""The record a store server leaves beside its file, so that every process on the host finds it.

``<db>.server.json`` holds the server's pid, host, port, start time and the path of its token
file (``<db>.server.token``, mode 0600; the token itself is never in the record). A record
whose pid is gone is stale: readers ignore it and remove it.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from fibreflow.errors import StoreError

TOKEN_ENV = "FIBREFLOW_STORE_TOKEN"
RECORD_SUFFIX = ".server.json"
TOKEN_SUFFIX = ".server.token"
COMPANION_SUFFIXES = (".wal", ".lock", ".lock.gate", ".tmp", RECORD_SUFFIX, TOKEN_SUFFIX)
"""What DuckDB and fibreflow keep beside a store file (sandboxes must see none of them)."""


@dataclass(frozen=True)
class ServerRecord:
    """A running store server: where it listens and which file it owns."""

    pid: int
    host: str
    port: int
    started: str
    db: str
    token_file: str

    @property
    def url(self) -> str:
        """The server's ``quack://host:port`` URL."""
        return f"quack://{self.host}:{self.port}"

    def token(self) -> str:
        """The server's token, from its 0600 file."""
        try:
            return Path(self.token_file).read_text().strip()
        except OSError as exc:
            raise StoreError(f"{self.url}: the store server for {self.db} is running (pid {self.pid}) but its "
                             f"token file {self.token_file} cannot be read: {exc.strerror}") from exc


def record_path(db: Path) -> Path:
    """Where the server for ``db`` writes its record."""
    return db.with_name(db.name + RECORD_SUFFIX)


def token_path(db: Path) -> Path:
    """Where the server for ``db`` keeps its token (mode 0600)."""
    return db.with_name(db.name + TOKEN_SUFFIX)


def pid_alive(pid: int | None) -> bool:
    """Whether a process ``pid`` exists on this machine (a zombie counts as gone; None never)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def find_server(db: Path) -> ServerRecord | None:
    """The live server for ``db``, or None; a stale record (dead pid, unreadable) is removed."""
    path = record_path(db)
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return None
    try:
        record = ServerRecord(**json.loads(raw))
    except (ValueError, TypeError):
        record = None
    if record is not None and pid_alive(record.pid):
        return record
    try:
        if path.read_text() == raw:  # another server may have replaced it meanwhile
            path.unlink()
    except OSError:
        pass
    return None


def write_record(record: ServerRecord) -> Path:
    """Publish ``record`` atomically beside its file."""
    path = record_path(Path(record.db))
    tmp = path.with_name(path.name + f".{os.getpid()}")
    tmp.write_text(json.dumps(asdict(record), indent=1))
    os.replace(tmp, path)
    return path


def remove_record(db: Path, pid: int) -> None:
    """Remove the record for ``db`` if it is ``pid``'s."""
    path = record_path(db)
    try:
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def server_token(db: Path) -> str:
    """The token the server for ``db`` requires: ``FIBREFLOW_STORE_TOKEN`` if set, else a new random
    one; either way written to the 0600 token file beside ``db`` for this host's clients."""
    token = os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(32)
    if len(token) < 8:
        raise StoreError(f"{TOKEN_ENV} is too short (at least 8 characters)")
    path = token_path(db)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, token.encode())
    finally:
        os.close(fd)
    return token
