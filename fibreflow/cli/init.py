"""``fibreflow init [--repo PATH] [--force]``: the files a repository of your own starts with.

Writes ``fibreflow.yaml`` (every setting with its default and doc, generated from the settings
models: ``fibreflow.config.settings_template``), a starter ``features.json`` that ``fibreflow
build`` accepts, and ``.env.example`` (every variable fibreflow reads, values empty), and adds
the store, the reports and ``.env`` to ``.gitignore`` (only the lines it lacks). An existing file
is never overwritten without ``--force``: then nothing is written and the command exits 2 naming
it. ``.env`` itself is never written: copy ``.env.example`` and fill it in.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fibreflow.cli import usage_error

STARTER_FEATURES = {
    "goal": "What these features add up to, in one sentence.",
    "test_command": "python -m pytest -q",
    "features": [{
        "id": "first-feature",
        "description": "Replace this with the first thing to build: what it does, where it goes and which "
                       "tests show it works. Add one entry per feature; list ids in dependencies when one "
                       "builds on another.",
        "dependencies": [],
    }],
}
GITIGNORE_HEADER = "# fibreflow: the store, reports and local secrets"


def gitignore_lines(db_path: Path, reports_dir: Path) -> list[str]:
    """What ``.gitignore`` needs: the store and the files beside it, the reports, ``.env``."""
    return [f"/{db_path.as_posix().lstrip('./')}*", f"/{reports_dir.as_posix().strip('./')}/", ".env"]


def env_example() -> str:
    """``.env.example``: every variable fibreflow reads, with its doc and an empty value."""
    from fibreflow.config import ENV_VARS, SECRET_ENV_VARS

    lines = ["# Copy to .env (never committed) and fill in what you use; the environment wins over .env.", ""]
    for name, doc in ENV_VARS.items():
        lines += [f"# {doc}" + (" Secret." if name in SECRET_ENV_VARS else ""), f"{name}=", ""]
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="write fibreflow.yaml, features.json, .env.example and .gitignore lines",
                       description="Start using fibreflow on a repository: a commented fibreflow.yaml with every "
                                   "setting, a starter features.json, .env.example, and .gitignore lines for the "
                                   "store, reports and .env. Refuses to overwrite a file unless --force.")
    p.add_argument("--repo", default=".", help="the repository to set up (default: .)")
    p.add_argument("--force", action="store_true", help="overwrite fibreflow.yaml, features.json, .env.example")
    p.set_defaults(func=init)


def init(args: argparse.Namespace) -> int:
    """Handler of ``fibreflow init``."""
    from fibreflow.config import Settings, settings_template

    root = Path(args.repo).expanduser()
    if not root.is_dir():
        return usage_error("init", f"--repo {args.repo}: no such directory")
    files = {"fibreflow.yaml": settings_template(), "features.json": json.dumps(STARTER_FEATURES, indent=2) + "\n",
             ".env.example": env_example()}
    existing = [name for name in files if (root / name).exists()]
    if existing and not args.force:
        return usage_error("init", f"{', '.join(str(root / n) for n in existing)} exist(s) already; nothing was "
                                   "written (--force overwrites them)")
    for name, text in files.items():
        (root / name).write_text(text)
    defaults = Settings()
    added = append_gitignore(root / ".gitignore", gitignore_lines(defaults.db_path, defaults.reports_dir))
    print(f"fibreflow init: wrote {', '.join(str(root / n) for n in files)}"
          + (f"; added {', '.join(added)} to {root / '.gitignore'}" if added else "; .gitignore already complete"))
    print("next: cp .env.example .env and fill in your keys; set autopilot.staging_command, smoke_checks and "
          "production_command in fibreflow.yaml; describe your features in features.json; "
          "`fibreflow config show` and `fibreflow doctor` check it all")
    return 0


def append_gitignore(path: Path, lines: list[str]) -> list[str]:
    """Append the ``lines`` ``path`` lacks (once each, under one header); the lines added."""
    text = path.read_text() if path.exists() else ""
    present = {line.strip() for line in text.splitlines()}
    missing = [line for line in lines if line not in present]
    if missing:
        block = ([GITIGNORE_HEADER] if GITIGNORE_HEADER not in present else []) + missing
        prefix = "" if not text or text.endswith("\n") else "\n"
        path.write_text(text + prefix + "\n".join(block) + "\n")
    return missing
