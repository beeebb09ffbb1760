"""Digital twin in a real browser: time to the first full render and store-to-screen latency.

Serves the twin with ``fibreflow twin`` on a store of sample history and drives Debian's
chromium with Playwright. ``first_render_s`` is with the shipped settings (a pre-heated
kernel, measured once the server is idle as it is for a user who opens it later), from the
request until every figure of the five panels is drawn with data (goal <= 5 s);
``first_render_cold_s`` the same with ``--no-preheat``. ``store_to_screen_s`` is the median
time from writing an SLA check to seeing its name on screen (goal < 2 s). The breakdown says
where the time goes: ``kernel_start_s`` (a bare ipykernel), ``imports_s`` (fibreflow.twin and a
first FigureWidget, as in a kernel ``fibreflow twin`` serves; ``imports_unserved_s`` without the
import trim of ``fibreflow.twin``), ``*_html_served_s`` (request to the page's first byte),
``cold_app_build_s`` (TwinApp built from the store in the kernel) and ``*_front_end_s`` (first
byte to every figure drawn).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

_IMPORTS = ("import time; t = time.perf_counter(); import fibreflow.twin.app, plotly.graph_objects as go; "
            "go.FigureWidget(); print(time.perf_counter() - t)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", type=Path, default=None, help="store to show (default: a temp store of sample history)")
    p.add_argument("--days", type=float, default=14.0, help="days of sample history (default 14)")
    p.add_argument("--writes", type=int, default=5, help="rows written for the store-to-screen latency (default 5)")


def _import_s(*, served: bool) -> float:
    env = dict(os.environ)
    env.pop("FIBREFLOW_TWIN_PLOTLY_URL", None)
    if served:
        from fibreflow.twin.figure import ASSET_ENV, ASSET_URL

        env[ASSET_ENV] = ASSET_URL
    out = subprocess.run([sys.executable, "-c", _IMPORTS], env=env, capture_output=True, text=True, check=True)
    return round(float(out.stdout.strip().splitlines()[-1]), 3)


def _kernel_start_s() -> float:
    from jupyter_client.manager import start_new_kernel

    t0 = time.perf_counter()
    km, kc = start_new_kernel(kernel_name="python3")
    elapsed = time.perf_counter() - t0
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    return round(elapsed, 3)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from fibreflow.benchmarks._twin_browser import TwinServer, launch, open_twin, wait_for_text
    from fibreflow.sla.monitor import insert_checks
    from fibreflow.store import Store
    from fibreflow.twin.sample_data import fill_sample_history

    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "twin.duckdb"
        store = Store(db, lock_timeout_s=60)
        store.migrate()
        if args.db is None:
            fill_sample_history(store, days=args.days, seed=0)
        result: dict[str, Any] = {"breakdown": {"kernel_start_s": _kernel_start_s(),
                                                "imports_s": _import_s(served=True),
                                                "imports_unserved_s": _import_s(served=False)}}
        with sync_playwright() as pw:
            browser = launch(pw)
            with TwinServer(db, preheat=False, cwd=tmp) as server:
                server.wait_until_idle()
                page, cold = open_twin(browser, server.url)
                page.close()
            with TwinServer(db, preheat=True, cwd=tmp) as server:
                warmup_s = server.wait_until_idle()
                page, warm = open_twin(browser, server.url)
                latencies = []
                for _ in range(args.writes):
                    name = f"probe_{uuid.uuid4().hex[:8]}"
                    insert_checks(store, [{"name": name, "check_type": "sync_lag", "value": 1.0,
                                           "threshold": 60.0, "status": "ok",
                                           "checked_at": dt.datetime.now(dt.UTC)}])
                    latencies.append(wait_for_text(page, ".ff-panel-infrastructure", name))
                    time.sleep(0.5)
                page.close()
            browser.close()
    result.update({
        "first_render_s": warm["first_render_s"],
        "first_render_cold_s": cold["first_render_s"],
        "store_to_screen_s": round(statistics.median(latencies), 3),
        "store_to_screen_max_s": round(max(latencies), 3),
        "figures": warm["figures"],
        "goals_met": {"first_render_s": warm["first_render_s"] <= 5.0,
                      "store_to_screen_s": max(latencies) < 2.0},
    })
    result["breakdown"].update({
        "preheat_warmup_s": round(warmup_s, 3),
        "cold_html_served_s": cold["html_s"], "cold_app_build_s": cold["app_build_s"],
        "cold_front_end_s": round(cold["first_render_s"] - cold["html_s"], 3),
        "preheated_html_served_s": warm["html_s"],
        "preheated_front_end_s": round(warm["first_render_s"] - warm["html_s"], 3)})
    return result
