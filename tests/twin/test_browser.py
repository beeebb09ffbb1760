"""The twin served by ``fibreflow twin`` (Voila), opened in Debian's chromium through Playwright.

Screenshots of every panel go to reports/twin/.
"""

from __future__ import annotations

import datetime as dt
import shutil
import uuid
from pathlib import Path

import pytest

from fibreflow.store import Store

playwright = pytest.importorskip("playwright.sync_api")
pytestmark = [pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="needs Debian's chromium"),
              pytest.mark.slow]  # a real Voila server and a real browser

REPORTS = Path(__file__).resolve().parents[2] / "reports" / "twin"
PANELS = [("Data infrastructure", "infrastructure"), ("Agent topology", "topology"),
          ("Cost attribution", "costs"), ("Learning analytics", "learning"), ("Simulation", "simulation")]
ERRORS = ".jp-RenderedText[data-mime-type='application/vnd.jupyter.stderr'], .jp-OutputArea-output.jp-mod-error"


def test_the_five_panels_render_react_and_follow_the_store(filled: Store, tmp_path: Path) -> None:
    """On the seeded sample history (tests/twin/conftest.py): every panel, a control and a live row."""
    from fibreflow.benchmarks._twin_browser import TwinServer, launch, open_tab, open_twin, wait_for_text

    REPORTS.mkdir(parents=True, exist_ok=True)
    store, twin_db = filled, filled.path
    with playwright.sync_playwright() as pw, TwinServer(twin_db, cwd=tmp_path) as server:
        browser = launch(pw)
        try:
            page, timings = open_twin(browser, server.url, timeout_s=60)
            console_errors: list[str] = []
            page.on("pageerror", lambda exc: console_errors.append(str(exc)))
            assert page.locator(".ff-twin .lm-TabBar-tab").all_text_contents() == [t for t, _ in PANELS]
            drawn_first = page.locator(".ff-twin .js-plotly-plot").count()
            assert drawn_first == timings["figures"] >= 3  # the first tab's figures, and no other tab's
            page.set_viewport_size({"width": 1500, "height": 2600})  # Voila scrolls inside: show whole panels
            for title, css in PANELS:
                panel = page.locator(f".ff-panel-{css}")
                if css != PANELS[0][1]:
                    assert panel.count() == 0, f"{title} was built before it was opened"
                open_tab(page, title, css)
                plots = panel.locator(".js-plotly-plot")
                assert plots.count() >= 1, title
                drawn = plots.evaluate_all("ps => ps.map(g => [g._fullData ? g._fullData.length "
                                          "+ (g.layout.meta === 'empty' ? 1 : 0) : 0, g.offsetWidth])")
                assert all(n > 0 for n, _ in drawn), f"{title}: a figure without data {drawn}"
                assert all(w > 300 for _, w in drawn), f"{title}: a figure not sized to its panel {drawn}"
                assert panel.locator(".ff-error").is_hidden(), title
                page.wait_for_timeout(300)  # let plotly finish its transitions before the picture
                page.screenshot(path=str(REPORTS / f"{css}.png"), full_page=True)
            assert page.locator(ERRORS).count() == 0
            loaded = page.evaluate("performance.getEntriesByType('resource').map(r => r.name)")
            assert sum("plotly.min.js" in u for u in loaded) == 1  # plotly.js once for the page
            assert not [u for u in loaded if "widgetbundle.js" in u]  # and not plotly's widget bundle beside it
            assert not [u for u in loaded if "jupyterlab-plotly" in u]  # not a second copy for mime output
            assert "neon_to_convex_max_delay" in (page.text_content(".ff-panel-infrastructure") or "")
            assert "Traceback" not in (page.text_content("body") or "")

            # a what-if control moves, the projection follows
            cost = page.locator(".ff-sim-agents .ff-cost")
            before = cost.text_content()
            handle = page.locator(".ff-sim-count .noUi-handle")
            handle.focus()
            for _ in range(10):
                handle.press("ArrowRight")
            wait_for_text(page, ".ff-sim-agents", "add 15 ", timeout_s=10)  # 5 + ten steps
            assert cost.text_content() != before
            page.screenshot(path=str(REPORTS / "simulation-moved.png"), full_page=True)

            assert int(page.get_attribute(".ff-meta", "data-figures") or 0) == \
                page.locator(".ff-twin .js-plotly-plot").count() > drawn_first  # every tab's figures now

            # a row written to the store comes on screen (how fast: `fibreflow bench twin`)
            open_tab(page, *PANELS[0])
            name = f"probe_{uuid.uuid4().hex[:8]}"
            store.insert_rows("sla_checks", [{"name": name, "check_type": "sync_lag", "value": 120.0,
                                              "threshold": 60.0, "status": "violation", "reason": "browser probe",
                                              "checked_at": dt.datetime.now(dt.UTC)}])
            wait_for_text(page, ".ff-panel-infrastructure", name, timeout_s=10)
            wait_for_text(page, ".ff-fig-violations", name, timeout_s=5)
            page.wait_for_timeout(300)
            page.screenshot(path=str(REPORTS / "infrastructure-live.png"), full_page=True)
            assert console_errors == []
        finally:
            browser.close()
    assert "Traceback" not in server.log()
    shutil.copy(server.log_path, REPORTS / "voila.log")
