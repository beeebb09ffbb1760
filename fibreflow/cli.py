"""The ``fibreflow`` command.

Each subsystem registers its own subcommands through ``register(subparsers)`` in the module
listed in ``COMMAND_MODULES``; handlers import heavy dependencies lazily so ``--help`` is fast.
Exit codes: 0 ok, 1 the thing checked failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence
from typing import Any

from fibreflow.errors import ConfigError, FibreflowError, ForeignDatabaseError

COMMAND_MODULES = (
    "fibreflow.doctor",
    "fibreflow.demo",
    "fibreflow.sla.cli",
    "fibreflow.sandbox.cli",
    "fibreflow.runner_cli",
    "fibreflow.autopilot_cli",
    "fibreflow.routing_cli",
    "fibreflow.costs_cli",
    "fibreflow.learning_cli",
    "fibreflow.simulation_cli",
    "fibreflow.twin.cli",
    "fibreflow.reports",
    "fibreflow.bench",
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def usage_error(command: str, message: str) -> int:
    """Print ``fibreflow COMMAND: error: MESSAGE`` on stderr and return the usage exit code."""
    print(f"fibreflow {command}: error: {message}", file=sys.stderr)
    return EXIT_USAGE


def emit_json(obj: Any) -> None:
    """Print one JSON object on stdout (the ``--json`` contract)."""
    sys.stdout.write(json.dumps(obj, default=str, sort_keys=False) + "\n")
    sys.stdout.flush()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fibreflow",
        description="Run autonomous coding agents at scale: sandboxes, SLAs, reports, the digital twin.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # subsystem not installed in this build
            raise
        module.register(sub)
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


if __name__ == "__main__":
    sys.exit(main())
