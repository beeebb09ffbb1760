"""Digital twin in a real browser: time to the first render, and many viewers following the store.

Serves the twin with ``fibreflow twin`` on a store of sample history and drives Debian's
chromium with Playwright. ``first_render_s`` is with the shipped settings (a pre-heated
kernel, measured once the server is idle as it is for a user who opens it later), from the
request until the five tab titles and every figure of the panel on screen are drawn with data
(goal <= 5 s); ``first_render_cold_s`` the same with ``--no-preheat`` (goal <= 8 s);
``tab_open_s`` the seconds until each other tab, opened for the first time, shows its figures.
Then ``viewers`` pages (10, in this machine's chromium: their drawing competes with the kernels
for the CPU, as it would not for people at their own screens) have the twin open at once, each
with its own kernel polling the store, while a writer inserts ``--writes`` SLA checks through the store, one every
``--write-interval`` seconds: ``store_to_screen_s`` is the p95 over the writes of the time from
a committed row until its name is on every screen (goal < 2 s; ``store_to_screen_max_s`` the
worst, ``store_to_screen_missed`` rows some screen never showed within 15 s; the medians
``store_to_screen_p50_s`` and ``store_to_first_screen_p50_s``, to the first screen), and
``writer_wait_p95_ms`` the p95 of the writer's wait for the store (the ``wait`` of ``fibreflow
bench store``; ``writer_write_p95_ms`` of the whole insert), goal < 100 ms. The breakdown says
where the time goes: ``kernel_start_s`` (a bare ipykernel), ``imports_s`` (fibreflow.twin and a
first FigureWidget, as in a kernel ``fibreflow twin`` serves; ``imports_unserved_s`` without the
import trim of ``fibreflow.twin``), ``*_html_served_s`` (request to the page's first byte),
``cold_app_build_s`` (TwinApp built from the store in the kernel) and ``*_front_end_s`` (first
byte to the first render).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from fibreflow.errors import ConfigError

_IMPORTS = ("import time; t = time.perf_counter(); import fibreflow.twin.app, plotly.graph_objects as go; "
            "go.FigureWidget(); print(time.perf_counter() - t)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", type=Path, default=None, help="store to show (default: a temp store of sample history)")
    p.add_argument("--days", type=float, default=14.0, help="days of sample history (default 14)")
    p.add_argument("--viewers", type=int, default=10, help="pages open at once while the writer writes (default 10)")
    p.add_argument("--writes", type=int, default=15, help="rows the writer inserts (default 15)")
    p.add_argument("--write-interval", type=float, default=2.0, help="seconds between the writer's rows (default 2)")


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


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0


def run(args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from fibreflow.benchmarks._twin_browser import TwinServer, launch, open_tab, open_twin
    from fibreflow.store import Store
    from fibreflow.twin.app import PANELS
    from fibreflow.twin.sample_data import fill_sample_history

    if args.viewers < 1 or args.writes < 1 or args.write_interval < 0:
        raise ConfigError("--viewers and --writes must be at least 1 and --write-interval not negative",
                          key="--viewers")
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
            browser = launch(pw, viewers=True)
            with TwinServer(db, preheat=False, cwd=tmp) as server:
                server.wait_until_idle()
                page, cold = open_twin(browser, server.url)
                page.close()
            with TwinServer(db, preheat=True, cwd=tmp) as server:
                warmup_s = server.wait_until_idle()
                page, warm = open_twin(browser, server.url)
                tabs = {cls.title: round(open_tab(page, cls.title, cls.css), 3) for cls in PANELS[1:]}
                figures_all = int(page.get_attribute(".ff-meta", "data-figures") or 0)
                page.close()
                server.wait_until_idle(quiet_s=1.0)
                many = _viewers(browser, server, Store(db, lock_timeout_s=60), args)
            browser.close()
    result.update({
        "first_render_s": warm["first_render_s"],
        "first_render_cold_s": cold["first_render_s"],
        "store_to_screen_s": many["store_to_screen_s"],
        "store_to_screen_max_s": many["store_to_screen_max_s"],
        "store_to_screen_missed": many["store_to_screen_missed"],
        "store_to_screen_p50_s": many["store_to_screen_p50_s"],
        "store_to_first_screen_p50_s": many["store_to_first_screen_p50_s"],
        "viewers": many["viewers"],
        "writer_wait_p95_ms": many["writer_wait_p95_ms"],
        "writer_write_p95_ms": many["writer_write_p95_ms"],
        "viewers_first_render_max_s": many["first_render_max_s"],
        "figures": warm["figures"], "figures_all_tabs": figures_all, "tab_open_s": tabs,
        "goals_met": {"first_render_s": warm["first_render_s"] <= 5.0,
                      "first_render_cold_s": cold["first_render_s"] <= 8.0,
                      "store_to_screen_s": many["store_to_screen_s"] is not None and many["store_to_screen_s"] < 2.0
                      and not many["store_to_screen_missed"],
                      "writer_wait_p95_ms": many["writer_wait_p95_ms"] < 100.0},
    })
    result["breakdown"].update({
        "preheat_warmup_s": round(warmup_s, 3),
        "cold_html_served_s": cold["html_s"], "cold_app_build_s": cold["app_build_s"],
        "cold_front_end_s": round(cold["first_render_s"] - cold["html_s"], 3),
        "preheated_html_served_s": warm["html_s"],
        "preheated_front_end_s": round(warm["first_render_s"] - warm["html_s"], 3)})
    return result


def _viewers(browser: Any, server: Any, store: Any, args: argparse.Namespace) -> dict[str, Any]:
    """``args.viewers`` pages follow the store while a thread writes SLA checks through it."""
    from fibreflow.benchmarks._twin_browser import ALL_DRAWN, WATCH_PROBES
    from fibreflow.sla.monitor import insert_checks

    pages, opened = [], []
    for _ in range(args.viewers):  # every request first: the kernels start side by side
        page = browser.new_page(viewport={"width": 1500, "height": 1000})
        opened.append(time.perf_counter())
        page.goto(server.url, timeout=180_000, wait_until="commit")
        pages.append(page)
    first = []
    for page, t0 in zip(pages, opened, strict=True):
        page.wait_for_function(ALL_DRAWN, arg=1, timeout=300_000, polling=100)
        first.append(time.perf_counter() - t0)
        page.evaluate(WATCH_PROBES)
    server.wait_until_idle(quiet_s=1.0, timeout=120)
    commits: dict[str, float] = {}
    writes_ms: list[float] = []
    waits_before = len(getattr(store, "wait_times_s", []))

    def write() -> None:
        for _ in range(args.writes):
            name = f"probe_{uuid.uuid4().hex[:8]}"
            t0 = time.perf_counter()
            # not sync_lag: each new sync check adds a latency subplot, and the figure would grow per write
            insert_checks(store, [{"name": name, "check_type": "heartbeat", "value": 1.0, "threshold": 60.0,
                                   "status": "ok", "checked_at": dt.datetime.now(dt.UTC)}])
            writes_ms.append((time.perf_counter() - t0) * 1000)
            commits[name] = time.time() * 1000
            time.sleep(args.write_interval)

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    seen: list[dict[str, float]] = []
    deadline = None
    while True:
        time.sleep(0.5)
        seen = [page.evaluate("window.__ffSeen") for page in pages]
        if not writer.is_alive():
            deadline = deadline or time.monotonic() + 15
            if all(name in s for s in seen for name in commits) or time.monotonic() > deadline:
                break
    writer.join()
    for page in pages:
        page.close()
    print(f"viewers: {len(pages)} screens saw {[sum(n in s for n in commits) for s in seen]} of {len(commits)} rows",
          file=sys.stderr)
    every = [name for name in commits if all(name in s for s in seen)]
    latencies = [max(0.0, max(s[name] for s in seen) - commits[name]) / 1000 for name in every]
    firsts = [max(0.0, min(s[name] for s in seen if name in s) - at) / 1000
              for name, at in commits.items() if any(name in s for s in seen)]
    waits = [w * 1000 for w in getattr(store, "wait_times_s", [])[waits_before:]] or writes_ms
    return {"viewers": len(pages), "first_render_max_s": round(max(first), 3),
            "store_to_screen_s": round(_pct(latencies, 0.95), 3) if latencies else None,
            "store_to_screen_max_s": round(max(latencies), 3) if latencies else None,
            "store_to_screen_missed": len(commits) - len(latencies),
            "store_to_screen_p50_s": round(_pct(latencies, 0.5), 3) if latencies else None,
            "store_to_first_screen_p50_s": round(_pct(firsts, 0.5), 3) if firsts else None,
            "writer_wait_p95_ms": round(_pct(waits, 0.95), 2),
            "writer_write_p95_ms": round(_pct(writes_ms, 0.95), 2)}
