"""The demo's build: the autopilot on ``data/demo/repo`` with the scripted model, offline.

Three features (``units``, ``splices``, ``budget``), six attempts each in local sandboxes. The
scripted model's first version of ``units`` fails; the knowledge base learns the failure and the
second iteration, shown it as a known pitfall, passes. Winners land on ``fibreflow/<run>/<feature>``
branches of a fresh git copy of the demo repository; staging and a smoke check run; the approval
request goes to a local Slack receiver.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from fibreflow.config import Settings, SmokeCheck

if TYPE_CHECKING:
    from fibreflow.autopilot import AutopilotResult
    from fibreflow.store import Store

DEMO_DATA = Path(__file__).resolve().parents[2] / "data" / "demo"
SMOKE = 'python -c "from fibrekit.budget import link_budget_ok; assert link_budget_ok(10000, 10, 5.0)"'


def fresh_repo(target: Path) -> Path:
    """A new git repository at ``target`` holding the demo repository's files, one commit."""
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(DEMO_DATA / "repo", target)
    git = ["git", "-C", str(target), "-c", "user.name=fibreflow demo", "-c", "user.email=demo@fibreflow.invalid"]
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "fibrekit: stubs and tests"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    return target


def demo_settings(settings: Settings) -> Settings:
    """The user's settings with the demo's staging deploy and smoke check."""
    autopilot = settings.autopilot.model_copy(update={
        "staging_command": "python -m pytest -q && echo 'deployed to the local staging checkout'",
        "smoke_checks": [SmokeCheck(name="link budget", command=SMOKE)],
    })
    return settings.model_copy(update={"autopilot": autopilot})


def run_build_demo(*, workdir: Path, store: Store, settings: Settings, attempts: int = 6,
                   webhook_url: str | None = None, out: Callable[[str], None] = print) -> AutopilotResult:
    """Run the autopilot on a fresh copy of the demo repository; returns the run."""
    from fibreflow.autopilot import AutopilotOptions, run_autopilot
    from fibreflow.yamlio import environ_overlay

    repo = fresh_repo(workdir / "fibrekit")
    out("\n== Autopilot build (SCRIPTED MODEL, offline: replies come from data/demo/model_script.yaml, "
        "no real model is called)")
    out(f"   repository: {repo} (a fresh git copy of data/demo/repo); {attempts} attempts per feature "
        "in local sandboxes")
    env = {"SLACK_WEBHOOK_URL": webhook_url} if webhook_url else {}
    with environ_overlay(env):
        options = AutopilotOptions(features_path=DEMO_DATA / "features.json", attempts=attempts, agent="claude",
                                   offline=True, agent_script=str(DEMO_DATA / "model_script.yaml"))
        return run_autopilot(None, options, repo=repo, store=store, settings=demo_settings(settings),
                             echo=lambda line: out(f"   {line}"))
