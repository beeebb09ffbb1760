"""Deploy steps: the SLA gate, the configured deploy commands and the smoke checks.

Deploy commands are the user's own (they need the network and credentials a sandbox never
has), so they run on the host, in a checkout of the winner's commit under
``<tmp>/fibreflow-autopilot/<run>/<stage>`` that stays until the run is decided (a staging
command may serve from it). They see ``FIBREFLOW_RUN_ID``, ``FIBREFLOW_BRANCH``,
``FIBREFLOW_COMMIT``, ``FIBREFLOW_REPO``, ``FIBREFLOW_STAGE`` and ``FIBREFLOW_CHECKOUT``.
Output goes to a file, not a pipe, so a server the command starts in the background cannot hold
the step open; what is kept is scrubbed of secrets.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fibreflow.autopilot.gitrepo import export_commit
from fibreflow.config import Settings, SLAGateSettings, SmokeCheck
from fibreflow.errors import AutopilotError, SLAViolationError
from fibreflow.store import Store

STAGING_URL_PREFIX = "FIBREFLOW_STAGING_URL="
_TAIL = 4000
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def runs_dir(run_id: str) -> Path:
    """Where a run's deploy checkouts live."""
    return Path(tempfile.gettempdir()) / "fibreflow-autopilot" / run_id


def remove_checkouts(run_id: str, *stages: str) -> None:
    """Remove the named stage checkouts of a run (all of them when none is named)."""
    root = runs_dir(run_id)
    for target in [root / s for s in stages] if stages else [root]:
        shutil.rmtree(target, ignore_errors=True)


def stage_checkout(repo: Path, commit: str, run_id: str, stage: str) -> Path:
    """A fresh checkout of ``commit`` for ``stage`` (a previous one is replaced)."""
    target = runs_dir(run_id) / stage
    shutil.rmtree(target, ignore_errors=True)
    return export_commit(repo, commit, target)


def run_command(command: str, *, cwd: Path, env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Run a shell command; its exit code, duration, whether it timed out and its output's tail."""
    from fibreflow.sla.delivery import scrub

    started = time.monotonic()
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(["/bin/sh", "-c", command], cwd=cwd, env={**os.environ, **env}, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        timed_out = False
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    return {"command": command, "exit_code": code, "timed_out": timed_out,
            "duration_s": round(time.monotonic() - started, 3), "output": scrub(text[-_TAIL:])}


def staging_url_from(output: str, configured: str | None) -> str | None:
    """The URL a staging command printed as ``FIBREFLOW_STAGING_URL=...``, else the configured one."""
    for line in reversed(output.splitlines()):
        if line.startswith(STAGING_URL_PREFIX):
            return line[len(STAGING_URL_PREFIX):].strip() or configured
    return configured


def expand(text: str, *, staging_url: str | None, key: str) -> str:
    """``${VAR}`` from the environment and ``{staging_url}``."""
    from fibreflow.yamlio import expand_env

    text = expand_env(text, key=key)
    if "{staging_url}" in text:
        if not staging_url:
            raise AutopilotError(f"{key} uses {{staging_url}} but no staging URL is known "
                                 "(set autopilot.staging_url or print FIBREFLOW_STAGING_URL=... when staging)")
        text = text.replace("{staging_url}", staging_url.rstrip("/"))
    return text


def smoke_check(check: SmokeCheck, index: int, *, cwd: Path, env: dict[str, str],
                staging_url: str | None) -> dict[str, Any]:
    """Run one smoke check; its result with ``ok``."""
    key = f"autopilot.smoke_checks.{index}"
    if check.command is not None:
        res = run_command(expand(check.command, staging_url=staging_url, key=key), cwd=cwd, env=env,
                          timeout=check.timeout_s)
        return {"name": check.label, "kind": "command", "ok": res["exit_code"] == 0 and not res["timed_out"], **res}
    url = expand(check.url or "", staging_url=staging_url, key=key)
    return {"name": check.label, "kind": "http", **http_probe(url, expect=check.expect_status,
                                                                timeout=check.timeout_s)}


def http_probe(url: str, *, expect: int, timeout: float) -> dict[str, Any]:
    """GET ``url`` until it answers ``expect`` or ``timeout`` passes (a staging app may still start)."""
    handlers = [urllib.request.ProxyHandler({})] if urlsplit(url).hostname in _LOOPBACK else []
    opener = urllib.request.build_opener(*handlers)
    deadline = time.monotonic() + timeout
    tries, status, error = 0, None, None
    while True:
        tries += 1
        left = max(0.5, deadline - time.monotonic())
        try:
            with opener.open(urllib.request.Request(url, headers={"User-Agent": "fibreflow-autopilot"}),
                             timeout=min(10.0, left)) as resp:
                status, error = resp.status, None
        except urllib.error.HTTPError as exc:
            status, error = exc.code, None
        except (urllib.error.URLError, OSError) as exc:
            status, error = None, str(getattr(exc, "reason", exc))
        if status == expect or time.monotonic() >= deadline:
            break
        time.sleep(min(0.25 * tries, 2.0, max(0.0, deadline - time.monotonic())))
    return {"url": url, "expect_status": expect, "status": status, "ok": status == expect, "tries": tries,
            "error": error}


def sla_gate(gate: SLAGateSettings, *, settings: Settings, store: Store, stage: str) -> dict[str, Any]:
    """Run ``require_fresh_data`` with the gate's SLAs; a violation under ``abort`` raises
    AutopilotError listing every violation."""
    from fibreflow.sla.config import load_sla_config
    from fibreflow.sla.monitor import require_fresh_data

    path = gate.config_path or settings.sla.config_path
    config = load_sla_config(path, settings=settings)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            results = require_fresh_data(gate.names, gate.policy, config=config, store=store)
        except SLAViolationError as exc:
            detail = {"config": str(path), "policy": gate.policy,
                      "violations": [_check(v) for v in exc.violations]}
            raise AutopilotError(f"SLA gate before the {stage} deploy: {exc}", step=f"sla_gate:{stage}",
                                 detail=detail) from exc
    return {"config": str(path), "policy": gate.policy, "checks": [_check(r) for r in results],
            "warnings": [str(w.message) for w in caught]}


def _check(result: Any) -> dict[str, Any]:
    return {k: getattr(result, k, None) for k in ("name", "status", "value", "threshold", "reason")}


__all__ = ["STAGING_URL_PREFIX", "expand", "http_probe", "remove_checkouts", "run_command", "runs_dir",
           "sla_gate", "smoke_check", "staging_url_from", "stage_checkout"]
