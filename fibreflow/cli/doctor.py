"""``fibreflow doctor``: what is present and missing on this machine."""

from __future__ import annotations

import argparse
import shutil
import socket
from typing import Any

from fibreflow.config import SECRET_ENV_VARS, load_settings


def _postgres_reachable(host: str = "127.0.0.1", port: int = 5432) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def _kernel_available() -> bool:
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        return "python3" in KernelSpecManager().find_kernel_specs()
    except Exception:
        return False


def _sandbox_mode() -> str:
    try:
        from fibreflow.sandbox.local import isolation_mode
    except ImportError:
        return "unavailable (sandbox package missing)"
    return isolation_mode()


def _store_mode() -> tuple[str, str]:
    """Where the store is (its file, or its URL) and the mode and URL every command will use,
    with whether a store server was found for the file."""
    from fibreflow.errors import FibreflowError
    from fibreflow.store import Store

    try:
        store = Store()
    except FibreflowError as exc:
        return "unavailable", f"unavailable ({exc})"
    return (str(store.path) if store.engine.mode == "duckdb" else store.url), store.describe()


def collect() -> dict[str, Any]:
    """Every fact doctor reports; secrets only as set / not set."""
    settings = load_settings()
    store, store_mode = _store_mode()
    facts: dict[str, Any] = {
        "config_file": str(settings.source) if settings.source else None,
        "store": store,
        "store_mode": store_mode,
        "bwrap": shutil.which("bwrap"),
        "chromium": shutil.which("chromium") or (shutil.which("/usr/bin/chromium")),
        "git": shutil.which("git"),
        "python_kernel": _kernel_available(),
        "postgres_127.0.0.1:5432": _postgres_reachable(),
        "sandbox_isolation": _sandbox_mode(),
    }
    for name in SECRET_ENV_VARS:
        facts[name] = "set" if settings.secrets_present[name] else "not set"
    facts["offline_demo_ready"] = bool(facts["python_kernel"] and facts["git"])
    return facts


def live_checks(*, offline: bool) -> list[Any]:
    """``--live``: the build's preflight (``build.preflight``): the model key and every tier's
    model ID, the E2B key when that backend is the default, Slack ``auth.test`` when configured."""
    from fibreflow.build.preflight import preflight

    settings = load_settings()
    return preflight(settings, models=True, offline=offline, backend=settings.sandbox.backend)


def run(args: argparse.Namespace) -> int:
    facts = collect()
    checks = live_checks(offline=args.offline) if getattr(args, "live", False) else None
    if checks is not None:
        facts["preflight"] = [c.to_dict() for c in checks]
    if args.json:
        from fibreflow.cli import emit_json

        emit_json(facts)
    else:
        for key, value in facts.items():
            if key == "preflight":
                continue
            mark = "ok " if value not in (None, False, "not set") and "unavailable" not in str(value) else "-- "
            print(f"{mark} {key}: {value if value is not None else 'missing'}")
        for check in checks or []:
            print(f"{'ok ' if check.ok else '-- '} preflight {check.name}: {check.detail}")
        print("offline demo can run" if facts["offline_demo_ready"] else "offline demo cannot run: see above")
    if checks is not None and not all(c.ok for c in checks):
        import sys

        failed = [c.subject or c.name for c in checks if not c.ok]
        print(f"fibreflow doctor: preflight failed: {', '.join(failed)}", file=sys.stderr)
        return 2
    return 0 if facts["offline_demo_ready"] else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="show what is present and missing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--live", action="store_true",
                   help="also check the services with their keys: the model key and every tier's model ID "
                        "(Models API), E2B when it is the backend, Slack auth.test when configured; exit 2 on a failure")
    p.add_argument("--offline", action="store_true",
                   help="with --live: check against the local scripted model instead of the API")
    p.set_defaults(func=run)
