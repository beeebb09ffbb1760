"""A real ``fibreflow sandbox serve`` process for the E2B tests, and backends pointed at it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fibreflow.sandbox.e2b import E2BBackend
from fibreflow.sandbox.e2b_launch import ServerProcess

SECRETS = ("ANTHROPIC_API_KEY", "E2B_API_KEY", "SLACK_BOT_TOKEN", "SLACK_WEBHOOK_URL")


@contextmanager
def e2b_server(*args: str, state: Path | None = None) -> Iterator[ServerProcess]:
    """The server as a child process (options ``args``), stopped afterwards; it must exit cleanly.
    ``state``: its XDG_STATE_HOME (a module-scoped server starts before the per-test environment)."""
    env: dict[str, str | None] = {name: None for name in SECRETS}
    env.update({"FIBREFLOW_CONFIG": None, "XDG_STATE_HOME": str(state)} if state else {})
    server = ServerProcess(*args, env=env).start()
    try:
        yield server
    finally:
        code = server.stop()
        assert code in (0, 143, -15), f"server exited {code}: {''.join(server.stderr_lines)[-2000:]}"


def backend_for(server: ServerProcess, **kw: Any) -> E2BBackend:
    """An e2b backend pointed at ``server``, quick to retry and unthrottled unless told."""
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("creates_per_second", 0)
    return E2BBackend(api_key=server.api_key, api_url=server.url, **kw)


def sdk_opts(server: ServerProcess) -> dict[str, str]:
    """The ``e2b`` SDK's connection options for ``server``."""
    return {"api_key": server.api_key, "api_url": server.url, "sandbox_url": server.url}
