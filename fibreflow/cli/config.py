"""``fibreflow config show [--json]``: the effective settings and where each came from.

One line per setting: its key, value and source (``default``, ``fibreflow.yaml:LINE``,
``environment (NAME)``, ``.env:LINE (NAME)``), then every environment variable fibreflow reads;
secrets show only ``set`` or ``unset`` and where they are set, never their values. With
``--json``: ``{"config_file", "env_file", "settings": [{"key", "value", "source", "secret"}]}``.
"""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="show the effective settings and where each came from")
    nouns = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    s = nouns.add_parser("show", help="every setting's value and source (default, file:line, environment, .env)",
                         description="Print every effective setting with its source; secrets only as set/unset. "
                                     "Precedence, highest first: the environment, ./.env, fibreflow.yaml, defaults.")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    s.set_defaults(func=show)


def show(args: argparse.Namespace) -> int:
    """Handler of ``fibreflow config show``."""
    from fibreflow.cli import emit_json
    from fibreflow.config import describe_settings, dotenv_path, load_settings

    settings = load_settings()
    rows = describe_settings(settings)
    env_file = dotenv_path()
    head = {"config_file": str(settings.source) if settings.source else None,
            "env_file": str(env_file) if env_file.is_file() else None}
    if args.json:
        emit_json({**head, "settings": [r.to_dict() for r in rows]})
        return 0
    print(f"settings file: {head['config_file'] or 'none (defaults; `fibreflow init` writes one)'}")
    print(f"env file: {head['env_file'] or f'none ({env_file} does not exist)'}")
    width = max(len(r.key) for r in rows)
    for r in rows:
        value = r.value if isinstance(r.value, str) else json.dumps(r.value)
        print(f"{r.key.ljust(width)}  {value}  [{r.source}]")
    return 0
