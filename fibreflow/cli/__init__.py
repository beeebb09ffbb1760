"""The ``fibreflow`` command: every command lives in this package, one module per noun.

Each module of ``COMMAND_MODULES`` adds its subcommands with ``register(subparsers)``; handlers
import heavy dependencies lazily so ``--help`` is fast. Exit codes: 0 ok, 1 the thing checked
failed, 2 usage or configuration error. The helpers here (``usage_error``, ``emit_json``,
``progress_echo``, ``show_result``) are shared by the command modules.

Modules: ``doctor``, ``demo``, ``sla`` (check, watch, compliance), ``sandbox`` (run, reap,
profiles), ``build`` (plain, ``--autopilot``, ``--resume``, ``--escalate``), ``approve``
(approve, reject), ``route``, ``cost`` (analyze), ``learn`` (list, show, stats), ``simulate``,
``twin``, ``report``, ``bench``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from fibreflow.errors import ConfigError, FibreflowError, ForeignDatabaseError

# one module of this package per command noun, in the order ``--help`` lists them
COMMAND_MODULES = tuple(f"fibreflow.cli.{noun}" for noun in (
    "doctor", "demo", "sla", "sandbox", "build", "approve", "route", "cost", "learn", "simulate", "twin", "report",
    "bench"))

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


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
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except (ConfigError, ForeignDatabaseError) as exc:
        print(f"fibreflow: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except FibreflowError as exc:
        print(f"fibreflow: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("fibreflow: interrupted", file=sys.stderr)
        return 130


