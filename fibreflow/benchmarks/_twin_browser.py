"""Drive ``fibreflow twin`` in Debian's chromium with Playwright: shared by the twin benchmark and
the browser test. ``playwright install`` is not needed: the system chromium is launched."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
# Several pages at once stand for several people, each looking at their own screen: no page is
# a throttled background tab.
VIEWER_ARGS = ["--disable-background-timer-throttling", "--disable-renderer-backgrounding",
               "--disable-backgrounding-occluded-windows"]

# Page side: when each ``probe_<8 hex>`` name first appears in the Data infrastructure panel's
# document (epoch ms, the clock the writer stamps its commits with), seen by a MutationObserver.
WATCH_PROBES = """() => {
  window.__ffSeen = window.__ffSeen || {};
  if (window.__ffWatch) return;
  const panel = document.querySelector('.ff-panel-infrastructure');
  const scan = () => {
    const now = Date.now();
    for (const m of (panel.textContent || '').matchAll(/probe_[0-9a-f]{8}/g)) if (!(m[0] in window.__ffSeen)) window.__ffSeen[m[0]] = now;
  };
  window.__ffWatch = new MutationObserver(scan);  // on every change of the panel, and nothing when idle
  window.__ffWatch.observe(panel, { subtree: true, childList: true, characterData: true });
  scan();
}"""

# The five tab titles, and every figure of the built panels (the app's ``data-figures``, at least
# ``n``) drawn by plotly with at least one trace of data.
ALL_DRAWN = """n => {
  const meta = document.querySelector('.ff-meta');
  const want = Math.max(n, +(meta?.dataset.figures || 0));
  if (!meta || document.querySelectorAll('.ff-twin .lm-TabBar-tab').length < 5) return false;
  const plots = [...document.querySelectorAll('.ff-twin .js-plotly-plot')];
  // a figure with no traces counts when it says so (layout.meta "empty": "no violations ...")
  return plots.length >= want && plots.every(g => g._fullData && (g._fullData.length > 0 || g.layout.meta === 'empty'));
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tree_cpu_ticks(root: int) -> int:
    """CPU ticks (user + system) used so far by ``root`` and all its descendants."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    total = 0
    for pid, tick in ticks.items():
        p = pid
        while p > 1:
            if p == root:
                total += tick
                break
            p = parents.get(p, 0)
    return total


class TwinServer:
    """``fibreflow twin`` on a free port of 127.0.0.1, stopped (with its kernels) on exit."""

    def __init__(self, db: str | Path, *, preheat: bool = True, port: int | None = None,
                 log_path: str | Path | None = None, cwd: str | Path | None = None) -> None:
        self.db, self.preheat = str(db), preheat
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log_path = Path(log_path) if log_path else Path(self.db).with_suffix(f".voila-{self.port}.log")
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_s = 0.0

    def __enter__(self) -> TwinServer:
        argv = [sys.executable, "-m", "fibreflow.cli", "twin", "--no-browser", f"--port={self.port}",
                f"--db={self.db}"] + ([] if self.preheat else ["--no-preheat"])
        t0 = time.perf_counter()
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in __exit__
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=self.cwd,
                                     start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"fibreflow twin exited with {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"fibreflow twin did not listen on {self.port}: {self.log()[-2000:]}") from None
                time.sleep(0.05)
        self.started_s = time.perf_counter() - t0
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_until_idle(self, *, quiet_s: float = 1.5, timeout: float = 90.0) -> float:
        """Wait until the server and its kernels stop using CPU (the pre-heated kernel has run the
        notebook); returns the seconds waited."""
        assert self.proc is not None
        t0 = time.monotonic()
        last, still_since = _tree_cpu_ticks(self.proc.pid), time.monotonic()
        while time.monotonic() - t0 < timeout:
            time.sleep(0.25)
            now = _tree_cpu_ticks(self.proc.pid)
            if now - last > 3:  # ticks are 10 ms: more than 30 ms of CPU in 250 ms is busy
                last, still_since = now, time.monotonic()
            elif time.monotonic() - still_since >= quiet_s and (not self.preheat or "is filled" in self.log()):
                break
        return time.monotonic() - t0

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # Voila shuts its kernels down on SIGTERM
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()


def launch(playwright: Any, *, viewers: bool = False) -> Any:
    """Debian's chromium, headless (``viewers``: pages in the background are not throttled)."""
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + (VIEWER_ARGS if viewers else []))


def open_twin(browser: Any, url: str, *, timeout_s: float = 60.0) -> tuple[Any, dict[str, float]]:
    """Open the twin and wait for the first render: the five tab titles and every figure of the
    panel on screen drawn with data. Returns the page and timings (seconds from the request):
    ``html_s`` page answered, ``first_render_s`` first render; ``figures``: figures drawn."""
    page = browser.new_page(viewport={"width": 1500, "height": 1000})
    t0 = time.perf_counter()
    page.goto(url, timeout=timeout_s * 1000, wait_until="commit")
    html_s = time.perf_counter() - t0
    page.wait_for_function(ALL_DRAWN, arg=1, timeout=timeout_s * 1000, polling=50)
    first_render_s = time.perf_counter() - t0
    figures = int(page.get_attribute(".ff-meta", "data-figures") or 0)
    build = float(page.get_attribute(".ff-meta", "data-build-s") or 0)
    return page, {"html_s": round(html_s, 3), "first_render_s": round(first_render_s, 3),
                  "app_build_s": round(build, 3), "figures": figures}


def open_tab(page: Any, title: str, css: str, *, timeout_s: float = 60.0) -> float:
    """Click the tab called ``title`` (its panel's css name ``css``) and wait until its figures, and
    those of every panel built before, are drawn with data; returns the seconds it took. A tab
    opened for the first time is built then (``TwinApp`` builds tabs lazily)."""
    before = int(page.get_attribute(".ff-meta", "data-figures") or 0)
    built = page.locator(f".ff-panel-{css}").count() > 0
    t0 = time.perf_counter()
    page.locator(".lm-TabBar-tab", has_text=title).click()
    if not built:
        page.wait_for_function(f"() => +(document.querySelector('.ff-meta')?.dataset.figures || 0) > {before}",
                               timeout=timeout_s * 1000, polling=50)
    page.locator(f".ff-panel-{css}").wait_for(state="visible", timeout=timeout_s * 1000)
    page.wait_for_function(ALL_DRAWN, arg=before + (0 if built else 1), timeout=timeout_s * 1000, polling=50)
    return time.perf_counter() - t0


def wait_for_text(page: Any, selector: str, text: str, *, timeout_s: float = 10.0) -> float:
    """Seconds until ``text`` is in the text of ``selector`` (SVG text included)."""
    t0 = time.perf_counter()
    page.wait_for_function("([sel, text]) => (document.querySelector(sel)?.textContent || '').includes(text)",
                           arg=[selector, text], timeout=timeout_s * 1000, polling=20)
    return time.perf_counter() - t0
