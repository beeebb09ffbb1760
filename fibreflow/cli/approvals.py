"""``fibreflow approvals serve [--port N]``: approve or reject autopilot runs from Slack's buttons.

Serves ``POST /slack/interactivity`` on 127.0.0.1 (``fibreflow.autopilot.approvals``); put it
behind your HTTPS reverse proxy or tunnel and give that URL to the Slack app as its
Interactivity Request URL. Needs ``SLACK_SIGNING_SECRET`` and ``autopilot.production_command``
(exit 2 naming the one missing). Runs until Ctrl-C or SIGTERM (exit 130 or 143).
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from fibreflow.cli import usage_error


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("approvals", help="approve autopilot runs from Slack (the approval buttons' endpoint)",
                       description="Approvals from Slack: `serve` receives the Approve and Reject clicks.")
    nouns = p.add_subparsers(dest="approvals_command", metavar="SUBCOMMAND", required=True)
    s = nouns.add_parser("serve", help="serve Slack's interactivity requests",
                         description="Receive the approval message's button clicks on POST /slack/interactivity "
                                     "(127.0.0.1:PORT), verify them with SLACK_SIGNING_SECRET, and approve or "
                                     "reject the run as `fibreflow approve` and `fibreflow reject` do.")
    s.add_argument("--port", type=int, default=3000, help="port on 127.0.0.1 (default 3000; 0: any free port)")
    s.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> int:
    """Handler of ``fibreflow approvals serve``."""
    import os

    from fibreflow.autopilot.approvals import ApprovalServer
    from fibreflow.autopilot.decisions import require_production_command
    from fibreflow.config import load_settings
    from fibreflow.store import open_store

    if not 0 <= args.port <= 65535:
        return usage_error("approvals serve", f"--port must be 0..65535, got {args.port}")
    settings = load_settings()  # also reads ./.env, where SLACK_SIGNING_SECRET may be
    secret = os.environ.get("SLACK_SIGNING_SECRET", "").strip()
    if not secret:
        return usage_error("approvals serve", "SLACK_SIGNING_SECRET is not set (the Slack app's Basic Information "
                                              "page shows it; put it in the environment or ./.env)")
    require_production_command(settings)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s approvals: %(message)s"))
    logger = logging.getLogger("fibreflow.autopilot.approvals")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        server = ApprovalServer(signing_secret=secret, settings=settings, store=open_store(settings.db_path),
                                port=args.port).start()
    except OSError as exc:
        return usage_error("approvals serve", f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror or exc}")
    try:
        print(f"fibreflow approvals: listening on {server.interactivity_url} (give Slack its public HTTPS "
              "address as the Interactivity Request URL); Ctrl-C stops", file=sys.stderr, flush=True)
        threading.Event().wait()  # until a signal raises Interrupted
    finally:
        server.close()
        logger.removeHandler(handler)
    return 0
