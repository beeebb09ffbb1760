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


def collect() -> dict[str, Any]:
    """Every fact doctor reports; secrets only as set / not set."""
    settings = load_settings()
    facts: dict[str, Any] = {
        "config_file": str(settings.source) if settings.source else None,
        "store": str(settings.db_path),
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


def run(args: argparse.Namespace) -> int:
    facts = collect()
    if args.json:
        from fibreflow.cli import emit_json

        emit_json(facts)
    else:
        for key, value in facts.items():
            mark = "ok " if value not in (None, False, "not set") and "unavailable" not in str(value) else "-- "
            print(f"{mark} {key}: {value if value is not None else 'missing'}")
        print("offline demo can run" if facts["offline_demo_ready"] else "offline demo cannot run: see above")
    return 0 if facts["offline_demo_ready"] else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="show what is present and missing")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)
