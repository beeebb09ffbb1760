"""The ``fibreflow`` command: every command lives in this package, one module per noun.

Each module of ``COMMAND_MODULES`` adds its subcommands with ``register(subparsers)``; handlers
import heavy dependencies lazily so ``--help`` is fast. Exit codes: 0 ok, 1 the thing checked
failed, 2 usage or configuration error, 130 stopped by SIGINT (Ctrl-C), 143 stopped by SIGTERM.
The helpers here (``usage_error``, ``emit_json``, ``progress_echo``, ``show_result``) are shared
by the command modules.

Signals: the first SIGINT or SIGTERM raises ``Interrupted`` (a KeyboardInterrupt) in the main
thread, so a command cleans up as it would for Ctrl-C (a build stops its attempts, ends their
sandboxes and marks its run ``cancelled``) and exits 128 + the signal's number; a second signal
exits at once, without a traceback, and leaves what is left to the next command (the sandbox
reaper, the crash sweep). Every command that opens the store first marks the runs whose
orchestrator died ``crashed`` (``fibreflow.build.records.mark_crashed_runs``).

Modules: ``init`` (fibreflow.yaml, features.json, .env.example, .gitignore), ``config`` (show),
``doctor``, ``demo``, ``sla`` (check, watch, compliance), ``sandbox`` (run, reap, profiles),
``build`` (plain, ``--autopilot``, ``--resume``, ``--escalate``), ``approve`` (approve, reject),
``approvals`` (serve: the Slack buttons' endpoint), ``route``, ``cost`` (analyze), ``learn``
(list, show, stats), ``simulate``, ``twin``, ``report``, ``bench``, ``store`` (serve: the store server; migrate --to; compact).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from fibreflow.errors import ConfigError, FibreflowError, ForeignDatabaseError, StoreUnreachable

if TYPE_CHECKING:
    from fibreflow.store import Store

# one module of this package per command noun, in the order ``--help`` lists them
COMMAND_MODULES = tuple(f"fibreflow.cli.{noun}" for noun in (
    "init", "config", "doctor", "demo", "sla", "sandbox", "build", "approve", "approvals", "route", "cost", "learn",
    "simulate", "twin", "report", "bench", "store"))

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130; SIGTERM exits 128 + 15 = 143
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_THREADS_GRACE_S = 2.0  # how long an interrupted command waits for its threads before it exits anyway


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised in the main thread so the command cleans up as for Ctrl-C."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        """128 + the signal's number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


class _StopSignals:
    """The first SIGINT/SIGTERM raises ``Interrupted``; any later one exits the process at once."""

    def __init__(self) -> None:
        self.first: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():  # only the main thread may
            for sig in _STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        # os.write, not print: the main thread may be inside a write to sys.stderr right now
        if self.first is not None:
            os.write(2, f"fibreflow: {name} again: exiting at once; the next fibreflow command cleans up what "
                        "is left (sandboxes, runs still marked running)\n".encode())
            os._exit(128 + signum)
        self.first = signum
        again = "Ctrl-C again" if signum == signal.SIGINT else "another SIGINT or SIGTERM"
        os.write(2, f"fibreflow: {name}: stopping and cleaning up ({again} exits at once)\n".encode())
        raise Interrupted(signum)


def _mark_crashed_runs(store: Store) -> None:
    """The store-open hook: runs whose orchestrator process is gone become ``crashed``."""
    from fibreflow.build.records import mark_crashed_runs

    crashed = mark_crashed_runs(store)
    if crashed:
        print(f"fibreflow: marked {len(crashed)} run(s) crashed, their process is gone: {', '.join(crashed)}",
              file=sys.stderr)


def _exit_if_threads_remain(code: int) -> None:
    """After an interrupt: if a non-daemon thread (an attempt stuck past its kill) still runs after
    a short wait, exit now rather than hang in interpreter shutdown waiting for it."""
    deadline = time.monotonic() + _THREADS_GRACE_S
    me = threading.current_thread()
    for thread in threading.enumerate():
        if thread is not me and not thread.daemon:
            thread.join(max(0.0, deadline - time.monotonic()))
    if any(t is not me and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def usage_error(command: str, message: str) -> int:
    """Print ``fibreflow COMMAND: error: MESSAGE`` on stderr and return the usage exit code."""
    print(f"fibreflow {command}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def emit_json(obj: Any) -> None:
    """Print one JSON object on stdout (the ``--json`` contract)."""
    sys.stdout.write(json.dumps(obj, default=str, sort_keys=False) + "\n")
    sys.stdout.flush()


def progress_echo(args: argparse.Namespace) -> Callable[[str], None] | None:
    """The autopilot's step lines on stderr, unless ``--json`` or ``--no-progress`` asked for quiet."""
    if getattr(args, "json", False) or getattr(args, "no_progress", False):
        return None
    return lambda line: print(f"autopilot: {line}", file=sys.stderr, flush=True)


def show_result(result: Any, args: argparse.Namespace, *, ok: bool) -> int:
    """Print a result (one JSON object with ``--json``) and return its exit code."""
    if args.json:
        emit_json(result.to_dict())
    else:
        print(result)
    return EXIT_OK if ok else EXIT_FAILED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fibreflow",
        description="Run autonomous coding agents at scale: sandboxes, SLAs, reports, the digital twin.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    stop = _StopSignals().install()
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_USAGE
        from fibreflow.store import add_open_hook

        add_open_hook(_mark_crashed_runs)
        return int(args.func(args) or 0)
    except (ConfigError, ForeignDatabaseError, StoreUnreachable) as exc:
        print(f"fibreflow: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FibreflowError as exc:
        print(f"fibreflow: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as exc:
        code = exc.exit_code if isinstance(exc, Interrupted) else EXIT_INTERRUPTED
        print(f"fibreflow: {exc or 'interrupted'} (exit {code})", file=sys.stderr)
        _exit_if_threads_remain(code)
        return code
    finally:
        if stop.first is None:  # after a signal the handler stays: a second one, even during exit, exits at once
            stop.restore()


