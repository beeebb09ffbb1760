"""``fibreflow report NAME [-p key=value ...] [--json]``: run a papermill report into ``reports/NAME/``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fibreflow.cli import EXIT_FAILED, emit_json
from fibreflow.errors import ConfigError, ReportError
from fibreflow.reporting.runner import REPORTS, run_report


def _parse_params(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"-p expects key=value, got {pair!r}", key="-p")
        out[key.strip()] = value
    return out


def _cmd_report(args: argparse.Namespace) -> int:
    try:
        result = run_report(args.name, parameters=_parse_params(args.param),
                            reports_dir=Path(args.reports_dir) if args.reports_dir else None,
                            timeout_s=args.timeout, kernel_name=args.kernel)
    except ReportError as exc:
        html = Path(exc.notebook_path).with_suffix(".html") if exc.notebook_path else None
        if args.json:
            emit_json({"notebook": exc.notebook_path, "html": str(html) if html and html.exists() else None,
                       "error": str(exc),
                       "cell_index": exc.cell_index, "ename": exc.ename, "evalue": exc.evalue})
        print(f"fibreflow: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        emit_json(result.to_dict())
    else:
        print(f"notebook: {result.notebook_path}\nhtml:     {result.html_path}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``fibreflow report NAME [-p key=value ...] [--json]``."""
    p = sub.add_parser("report", help="run a papermill report into reports/NAME/",
                       description=f"Run a report notebook. Known reports: {', '.join(sorted(REPORTS))} "
                                   "(or a path to an .ipynb).")
    p.add_argument("name", metavar="NAME", help="report name or path to a notebook")
    p.add_argument("-p", "--param", action="append", metavar="KEY=VALUE",
                   help="notebook parameter (repeatable); converted to the type of its default")
    p.add_argument("--reports-dir", help="output root (default: settings reports_dir, ./reports)")
    p.add_argument("--timeout", type=float, default=600, help="wall-clock limit in seconds (default 600)")
    p.add_argument("--kernel", help="Jupyter kernel name (default: a kernel of this interpreter)")
    p.add_argument("--json", action="store_true", help="print {notebook, html} as JSON")
    p.set_defaults(func=_cmd_report)


