"""``fibreflow twin [--port 8866] [--ip 127.0.0.1] [--db PATH] [--no-browser] [--no-preheat]``.

Serves ``notebooks/digital_twin.ipynb`` with Voila, on 127.0.0.1 unless ``--ip`` says otherwise.
What keeps the first view fast (measured in docs/BENCHMARKS.md, ``fibreflow bench twin``):

- a pre-heated kernel (``--preheat_kernel=True --pool_size=1``): the notebook has already run
  when the browser asks, so the page is served at once; the app needs nothing from the request;
- plotly's widget bundle served once from Voila's labextensions path instead of inside every
  ``FigureWidget`` (see ``fibreflow.twin.figure``);
- JupyterLab extensions the app does not use left out of the page (``UNUSED_EXTENSIONS``);
- tabs built when first opened (``TwinApp(lazy_tabs=True)``): the first page draws one panel.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

NOTEBOOK = "digital_twin.ipynb"
#: JupyterLab extensions the app does not use; jupyterlab-plotly (plotly's mime renderer) alone
#: makes every page evaluate a second 5 MB copy of plotly.js before the first widget shows.
UNUSED_EXTENSIONS = ["jupyterlab-plotly", "jupyterlab_pygments"]
IOPUB_TIMEOUT_S = 60


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("twin", help="serve the digital twin dashboard with Voila", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8866, help="port to serve on (default 8866)")
    p.add_argument("--ip", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--db", type=Path, default=None, help="the store to show (default: the configured one)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    p.add_argument("--no-preheat", action="store_true",
                   help="start a kernel per page view instead of keeping one ready (slower first view)")
    p.set_defaults(func=_serve)


def voila_command(*, port: int = 8866, ip: str = "127.0.0.1", db: Path | None = None, open_browser: bool = True,
                  preheat: bool = True, notebook: Path | None = None,
                  state_dir: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """The Voila command line and environment that serve the twin."""
    from fibreflow.config import load_settings
    from fibreflow.errors import ConfigError
    from fibreflow.reporting.runner import NOTEBOOKS_DIR
    from fibreflow.twin.figure import ASSET_ENV, ASSET_URL, prepare_assets

    settings = load_settings()
    notebook = notebook or NOTEBOOKS_DIR / NOTEBOOK
    if not notebook.is_file():
        raise ConfigError(f"the twin notebook is missing: {notebook}", path=str(notebook))
    if not 0 < port < 65536:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}", key="--port")
    assets = prepare_assets((state_dir or settings.state_dir).resolve() / "twin" / "labextensions")
    env = dict(os.environ)
    env[ASSET_ENV] = ASSET_URL
    env["FIBREFLOW_DB"] = str((db or settings.db_path).resolve())
    argv = [sys.executable, "-m", "voila", str(notebook), f"--port={port}", f"--Voila.ip={ip}",
            "--show_tracebacks=True", f"--VoilaConfiguration.extra_labextensions_path={assets}",
            # nbclient gives a cell's output 4 s after its reply; with many pages starting kernels
            # at once on a small machine it came later, and the page stayed empty for good
            f"--VoilaExecutor.iopub_timeout={IOPUB_TIMEOUT_S}"]
    argv += [f"--VoilaConfiguration.extension_denylist={name}" for name in UNUSED_EXTENSIONS]
    if preheat:
        argv += ["--preheat_kernel=True", "--pool_size=1"]
    if not open_browser:
        argv.append("--no-browser")
    return argv, env


def _serve(args: argparse.Namespace) -> int:
    argv, env = voila_command(port=args.port, ip=args.ip, db=args.db, open_browser=not args.no_browser,
                              preheat=not args.no_preheat)
    if not Path(env["FIBREFLOW_DB"]).exists():
        print(f"fibreflow twin: no store at {env['FIBREFLOW_DB']} yet; the panels fill as data arrives",
              file=sys.stderr)
    print(f"fibreflow twin: http://{args.ip}:{args.port}/ (store {env['FIBREFLOW_DB']}"
          + ("" if args.no_preheat else "; a pre-heated kernel makes the first view fast") + ")", flush=True)
    sys.stderr.flush()
    os.execve(sys.executable, argv, env)  # Voila takes over this process: signals reach it directly
    return 0  # pragma: no cover - not reached
