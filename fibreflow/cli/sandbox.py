"""``fibreflow sandbox run|reap|profiles|serve``: one command in a fresh sandbox, orphan reaping, profiles,
and an E2B-protocol server of this host's sandboxes."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fibreflow.cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, usage_error
from fibreflow.errors import SandboxUnavailable, StoreError
from fibreflow.sandbox.backends import BACKENDS
from fibreflow.sandbox.e2b_launch import KEY_ENV


def _usage(message: str) -> int:
    return usage_error("sandbox", message)


def run_command(args: argparse.Namespace) -> int:
    """Run one command in a fresh sandbox; exit 0 if it exited 0, 1 if it failed or was killed."""
    from fibreflow.cli import emit_json
    from fibreflow.config import load_settings
    from fibreflow.sandbox.manager import SandboxManager
    from fibreflow.sandbox.profiles import load_profile
    from fibreflow.store import Store

    command = list(args.cmd)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        return _usage("no command given: fibreflow sandbox run [options] -- CMD ...")
    repo = Path(args.repo).expanduser()
    if not repo.is_dir():
        return _usage(f"--repo {args.repo}: not a directory")
    settings = load_settings()
    backend = args.backend or settings.sandbox.backend
    if backend not in BACKENDS:
        return _usage(f"--backend {backend}: unknown (known: {', '.join(BACKENDS)})")
    profile = load_profile(args.profile or settings.sandbox.profile)
    store = Store(settings.db_path, lock_timeout_s=settings.store.lock_timeout_s)
    manager = SandboxManager(store=store, repo=repo, backend=backend,
                             state_dir=settings.state_dir if backend == "local" else None)
    sandbox = manager.create_sandbox("cli", profile)
    outcome = "error"
    try:
        result = sandbox.run(command if len(command) > 1 else command[0], timeout=args.timeout)
        outcome = "passed" if result.ok else "failed"
    finally:
        try:
            manager.cleanup_sandbox(sandbox, outcome=outcome)
        except StoreError as exc:  # the command's result still matters more than its record
            print(f"fibreflow sandbox: warning: session not recorded: {exc}", file=sys.stderr)
    if args.json:
        emit_json({"exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr,
                   "duration_s": round(result.duration_s, 3), "killed_reason": result.killed_reason,
                   "backend": sandbox.backend, "profile": profile.name,
                   "isolation": getattr(sandbox, "isolation", sandbox.backend)})
    else:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        killed = f", killed: {result.killed_reason}" if result.killed_reason else ""
        print(f"[sandbox {sandbox.backend}/{profile.name}: exit {result.exit_code} "
              f"in {result.duration_s:.3f}s{killed}]", file=sys.stderr)
    return EXIT_OK if result.ok else EXIT_FAILED


def reap(args: argparse.Namespace) -> int:
    """Reclaim what sandboxes of dead processes left (directories, cgroups, processes, mounts)."""
    from fibreflow.cli import emit_json
    from fibreflow.config import load_settings
    from fibreflow.sandbox.local import LocalBackend

    backend = LocalBackend(state_dir=load_settings().state_dir, reap=False)
    report = backend.reap()
    if args.json:
        emit_json(report.to_dict())
    else:
        if not report.sandboxes:
            print("nothing to reap")
        for sid in report.sandboxes:
            print(f"reaped sandbox {sid}")
        print(f"processes killed: {report.processes_killed}, mounts removed: {report.mounts_removed}, "
              f"cgroups removed: {report.cgroups_removed}, directories removed: {report.dirs_removed}")
        for err in report.errors:
            print(f"error: {err}", file=sys.stderr)
    return EXIT_FAILED if report.errors else EXIT_OK


def profiles(args: argparse.Namespace) -> int:
    """List the sandbox profiles and their limits."""
    from dataclasses import asdict

    from fibreflow.cli import emit_json
    from fibreflow.sandbox.profiles import load_profiles

    found = load_profiles()
    if args.json:
        emit_json({name: {**asdict(p), "env": dict(p.env), "env_passthrough": list(p.env_passthrough)}
                   for name, p in found.items()})
        return EXIT_OK
    for name, p in found.items():
        print(f"{name}: {p.description}\n  wall {p.wall_timeout_s:g}s, cpu {p.cpu_time_s}s, memory "
              f"{p.memory_mb} MB, processes {p.max_processes}, file size {p.max_file_size_mb} MB, "
              f"disk {p.disk_mb} MB, network {'on' if p.network else 'off'}, env passed through: "
              f"{', '.join(p.env_passthrough) or 'none'}")
    return EXIT_OK




def serve(args: argparse.Namespace) -> int:
    """Serve the E2B protocol over this host's sandboxes until SIGINT or SIGTERM."""
    import os
    import re
    import threading

    from fibreflow.config import load_settings
    from fibreflow.sandbox.e2b_pool import SandboxPool
    from fibreflow.sandbox.profiles import load_profile

    try:
        from fibreflow.sandbox.e2b_server import E2BServer
    except ImportError as exc:  # the protocol modules are the SDK's own
        raise SandboxUnavailable(f"fibreflow sandbox serve needs the E2B SDK ({exc}): "
                                 "pip install fibreflow[e2b]") from None
    if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", args.key_env):
        return _usage(f"--key-env {args.key_env!r}: not an environment variable name")
    key = os.environ.get(args.key_env)
    if not key:
        return _usage(f"--key-env: set {args.key_env} in the environment to the API key clients must send "
                      "(the key is never taken from a flag or a file)")
    if not 0 <= args.port <= 65535:
        return _usage(f"--port {args.port}: not a port number")
    if args.fail_creates < 0:
        return _usage(f"--fail-creates {args.fail_creates}: must be 0 or more")
    settings = load_settings()
    profile = load_profile(args.profile or settings.sandbox.profile)
    pool = SandboxPool(profile=profile, state_dir=settings.state_dir, cpu_count=os.cpu_count() or 1,
                       fail_creates=args.fail_creates)
    try:
        server = E2BServer(pool, api_key=key, port=args.port, host=args.ip).start()
    except OSError as exc:
        pool.close()
        return _usage(f"--ip {args.ip} --port {args.port}: cannot listen: {exc}")
    try:
        print(f"fibreflow sandbox serve: E2B protocol on {server.url} (API key from {args.key_env}, profile "
              f"{profile.name}, isolation {pool.backend.mode}); set the e2b backend's sandbox.e2b_api_url to it",
              flush=True)
        threading.Event().wait()
    finally:
        server.close()
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sandbox", help="run a command in a sandbox, reap orphans, list profiles")
    ssub = p.add_subparsers(dest="sandbox_command", metavar="SUBCOMMAND")

    r = ssub.add_parser("run", help="run one command in a fresh sandbox",
                        usage="fibreflow sandbox run [--backend local] [--profile NAME] [--repo PATH] "
                              "[--timeout S] [--json] -- CMD ...")
    r.add_argument("--backend", default=None, help=f"one of {', '.join(BACKENDS)} (default: config)")
    r.add_argument("--profile", default=None, help="sandbox profile (default: config, python-tests)")
    r.add_argument("--repo", default=".", help="repository the sandbox starts from (default: .)")
    r.add_argument("--timeout", type=float, default=None, help="wall timeout in seconds (default: the profile's)")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.add_argument("cmd", nargs=argparse.REMAINDER,
                   help="the command after --: several words run as argv, one word as a bash command line")
    r.set_defaults(func=run_command)

    g = ssub.add_parser("reap", help="reclaim sandboxes left by crashed processes")
    g.add_argument("--json", action="store_true", help="print one JSON object")
    g.set_defaults(func=reap)

    f = ssub.add_parser("profiles", help="list sandbox profiles")
    f.add_argument("--json", action="store_true", help="print one JSON object")
    f.set_defaults(func=profiles)

    s = ssub.add_parser("serve", help="serve this host's sandboxes over the E2B protocol (for the e2b backend)",
                        usage="fibreflow sandbox serve [--port N] [--ip 127.0.0.1] [--profile NAME] [--key-env NAME]")
    s.add_argument("--port", type=int, default=49999, help="port to listen on (default 49999; 0 picks a free one)")
    s.add_argument("--ip", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; plain HTTP: put TLS in front for other hosts)")
    s.add_argument("--profile", default=None, help="limits of every sandbox (default: config, python-tests)")
    s.add_argument("--key-env", default=KEY_ENV,
                   help=f"environment variable holding the API key clients must send (default {KEY_ENV})")
    s.add_argument("--fail-creates", type=int, default=0, metavar="N",
                   help="test knob: answer the first N sandbox creations with 429 (default 0)")
    s.set_defaults(func=serve)

    p.set_defaults(func=lambda args: (p.print_help(), EXIT_USAGE)[1])
