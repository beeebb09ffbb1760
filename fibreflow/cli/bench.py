"""``fibreflow bench NAME [options] [--json]``: benchmarks that measure the targets issues set.

Each benchmark is a module ``fibreflow.benchmarks.NAME`` with ``add_arguments(parser)`` and
``run(args) -> dict``; the dict is printed as one JSON object with ``--json``, else as lines.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import platform
from typing import Any

import fibreflow.benchmarks as benchmarks_pkg


def available() -> list[str]:
    """Names of the benchmarks this build has."""
    return sorted(m.name for m in pkgutil.iter_modules(benchmarks_pkg.__path__) if not m.name.startswith("_"))


def machine() -> dict[str, Any]:
    """The machine a figure was measured on."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    bsub = p.add_subparsers(dest="bench_name", metavar="NAME")
    for name in available():
        module = importlib.import_module(f"fibreflow.benchmarks.{name}")
        bp = bsub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        bp.add_argument("--json", action="store_true", help="print one JSON object")
        module.add_arguments(bp)
        bp.set_defaults(func=_run, bench_module=module)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _run(args: argparse.Namespace) -> int:
    from fibreflow.cli import emit_json

    result = args.bench_module.run(args)
    result.setdefault("machine", machine())
    if args.json:
        emit_json(result)
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0
