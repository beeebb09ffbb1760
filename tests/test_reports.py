"""Papermill reports: real kernels, a real store, the real CLI; the HTML is opened in chromium.

Kernel runs are kept to three (each costs seconds on two cores): the SLA report through the
CLI, a failing cell, and a hung cell stopped by the wall-clock guard.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from fibreflow.cli import main
from fibreflow.errors import ConfigError, ReportError
from fibreflow.reporting.kernels import resolve_kernel, runs_this_interpreter, venv_kernel_name
from fibreflow.reporting.runner import (
    REPORTS,
    coerce_parameters,
    report_notebook,
    report_parameters,
    run_report,
)
from fibreflow.store import Store

FIXTURES = Path(__file__).parent / "notebooks"


def _fill(store: Store) -> None:
    now = dt.datetime.now(dt.UTC)
    rows = []
    for i in range(6 * 60):  # six hours, one check every minute per SLA
        at = now - dt.timedelta(minutes=i)
        rows.append({"name": "orders_fresh", "status": "ok", "value": 30.0, "threshold": 300.0, "checked_at": at})
        bad = 60 <= i < 90
        rows.append({"name": "images_fresh", "status": "violation" if bad else "ok", "value": 900.0 if bad else 40.0,
                     "threshold": 600.0, "checked_at": at})
    store.insert_rows("sla_checks", rows)


@pytest.mark.slow
def test_cli_sla_report_writes_notebook_and_offline_html(store: Store, tmp_path: Path) -> None:
    _fill(store)
    exe = Path(sys.executable).with_name("fibreflow")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "fibreflow.cli"]
    env = {**os.environ, "FIBREFLOW_DB": str(store.path)}
    proc = subprocess.run([*cmd, "report", "sla", "-p", "days=7", "--json"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    nb_path, html_path = Path(out["notebook"]), Path(out["html"])
    assert nb_path.parent == tmp_path / "reports" / "sla" and nb_path.suffix == ".ipynb"
    assert html_path.with_suffix(".ipynb") == nb_path and html_path.exists()

    nb = nbformat.read(nb_path, as_version=4)
    assert [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])][0].source.count("days = 7")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    html = html_path.read_text()
    assert "load_sla_report" not in html and "views.compliance_figure" not in html  # no code cells
    assert html.count('class="plotly-graph-div"') == 4
    assert html.count("* plotly.js v") == 1  # inlined once, so the file works offline
    assert '<script src="http' not in html
    assert "1 of 2 SLAs met the target" in html and "images_fresh" in html
    # the compliance table is for people: 330 of 360 checks -> 91.7%, burn 1.67 -> "overspent 1.7x", no index
    assert "91.7%" in html and "overspent 1.7x" in html and "0.916667" not in html
    assert "row_heading" not in html and "<th>0</th>" not in html

    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium",
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page()
        fetched: list[str] = []
        page.route("**/*", lambda route: (fetched.append(route.request.url),
                                          route.continue_() if route.request.url.startswith("file:")
                                          else route.abort()))
        page_errors: list[str] = []
        page.on("pageerror", lambda exc: page_errors.append(str(exc)))
        page.goto(html_path.as_uri())
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=10_000)
        drawn = page.locator(".js-plotly-plot").count()
        heat_cells = page.locator(".js-plotly-plot .hm").count()
        browser.close()
    assert drawn == 4 and heat_cells == 1
    assert not page_errors and all(u.startswith("file:") for u in fetched)


@pytest.mark.slow
def test_failing_cell_raises_report_error_and_keeps_the_notebook(tmp_path: Path) -> None:
    marker = tmp_path / "interpreter.txt"
    with pytest.raises(ReportError) as info:
        run_report(str(FIXTURES / "failing.ipynb"), parameters={"marker_path": str(marker)},
                   reports_dir=tmp_path / "reports", timeout_s=60)
    err = info.value
    assert err.cell_index == 3 and err.ename == "ValueError" and err.evalue == "boom in the report"
    assert "cell 3" in str(err) and "raise ValueError" in str(err)
    kept = Path(err.notebook_path)
    assert kept.parent == tmp_path / "reports" / "failing"
    assert "boom in the report" in kept.read_text()
    assert "never reached" not in json.dumps([o for c in nbformat.read(kept, as_version=4).cells
                                              for o in c.get("outputs", [])])
    # the kernel was this interpreter (the venv), not whatever python3 is on PATH
    assert marker.read_text() == sys.executable


@pytest.mark.slow
def test_hung_kernel_is_stopped_by_the_wall_clock_guard(tmp_path: Path) -> None:
    pid_file = tmp_path / "kernel.pid"
    timeout = 4
    started = time.monotonic()
    with pytest.raises(ReportError, match="timed out after 4s in cell 1") as info:
        run_report(str(FIXTURES / "hang.ipynb"), parameters={"seconds": "120", "pid_path": str(pid_file)},
                   reports_dir=tmp_path, timeout_s=timeout)
    assert time.monotonic() - started < timeout * 3 + 10  # the guard, not the cell's 120 s; 10 s for the kernel
    assert info.value.cell_index == 1 and Path(info.value.notebook_path).exists()
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


# -- no kernel below ---------------------------------------------------------------------------

def test_registry_notebooks_exist_with_parameters() -> None:
    for name in REPORTS:
        assert report_notebook(name).is_file()
        assert report_parameters(report_notebook(name))
    assert set(report_parameters(report_notebook("sla"))) == {"days", "db_path", "config_path"}


def test_parameters_are_coerced_to_the_default_type(tmp_path: Path) -> None:
    sla = report_notebook("sla")
    assert coerce_parameters(sla, {"days": "7", "db_path": "/x.duckdb", "config_path": "None"}) == \
        {"days": 7, "db_path": "/x.duckdb", "config_path": None}
    assert coerce_parameters(sla, {"days": 2.5}) == {"days": 2.5}  # non-strings pass as given
    cell = nbformat.v4.new_code_cell('ratio = 0.5\nflag = False\nnames = ["a"]\nlabel = "x"')
    cell.metadata["tags"] = ["parameters"]
    nb_path = tmp_path / "p.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[cell], metadata={"kernelspec": {
        "name": "python3", "language": "python", "display_name": "Python 3"}}), nb_path)
    assert coerce_parameters(nb_path, {"ratio": "0.25", "flag": "yes", "names": "['b', 'c']", "label": "7"}) == \
        {"ratio": 0.25, "flag": True, "names": ["b", "c"], "label": "7"}
    with pytest.raises(ConfigError, match="parameter 'flag' expects bool"):
        coerce_parameters(nb_path, {"flag": "maybe"})


def test_tables_are_formatted_for_people() -> None:
    import pandas as pd

    from fibreflow.reporting.tables import (
        format_budget,
        format_dollars,
        format_percent,
        people_frame,
        people_table,
    )

    assert format_budget(-5.67) == "overspent 6.7x" and format_budget(0.62) == "62% left"
    assert format_budget(0.0) == "used up" and format_budget(float("nan")) == "-"
    assert (format_percent(0.953), format_percent(1.0), format_dollars(136.523)) == ("95.3%", "100%", "$136.52")
    assert format_dollars(0.0004) == "<$0.01" and format_dollars(-6.2299) == "-$6.23"
    df = pd.DataFrame({"name": ["a"], "compliance": [0.75], "error_budget_left": [-5.67], "burn_rate": [6.67],
                       "cost_usd": [1234.5], "savings_share": [0.05], "tokens": [4213079], "met": [False]},
                      index=[7])
    row = people_frame(df).iloc[0].to_dict()
    assert row == {"name": "a", "compliance": "75%", "error_budget_left": "overspent 6.7x", "burn_rate": "6.7x",
                   "cost_usd": "$1,234.50", "savings_share": "5%", "tokens": "4,213,079", "met": False}
    html = people_table(df).to_html()
    assert "row_heading" not in html and ">7<" not in html and "$1,234.50" in html


def test_every_report_shows_its_tables_through_people_table() -> None:
    for name, file in REPORTS.items():
        if name == "digital_twin":
            continue
        cells = [c.source.strip() for c in nbformat.read(report_notebook(name), as_version=4).cells
                 if c.cell_type == "code"]
        assert any("people_table(" in c for c in cells), name
        bare = [c for c in cells if c.startswith("report.") and "(" not in c]
        assert not bare, f"{file}: tables shown raw: {bare}"


def _cell_assignments(notebook: Path) -> dict[str, object]:
    """Every top-level assignment of the notebook's parameters cell, read with Python's own parser."""
    import ast

    cell = next(c for c in nbformat.read(notebook, as_version=4).cells
                if "parameters" in c.metadata.get("tags", []))
    return {n.targets[0].id: ast.literal_eval(n.value) for n in ast.parse(cell.source).body
            if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)}


def test_every_parameter_of_every_notebook_is_accepted_by_report_p() -> None:
    notebooks = sorted(Path(report_notebook("sla")).parent.glob("*.ipynb"))
    assert {nb.name for nb in notebooks} >= set(REPORTS.values())
    for nb in notebooks:
        defaults = _cell_assignments(nb)
        assert defaults, nb
        assert set(report_parameters(nb)) == set(defaults), nb.name
        for name, default in defaults.items():
            raw = default if isinstance(default, str) else repr(default)
            # the CLI path: -p name=raw -> coerce_parameters, back to the default's value and type
            assert coerce_parameters(nb, {name: raw}) == {name: default}, (nb.name, name)


def test_a_parameter_whose_comment_has_an_equals_sign_is_still_accepted(tmp_path: Path) -> None:
    cell = nbformat.v4.new_code_cell("days = 30\ngrowth_rate_per_month = 0.2  # 0.2 = 20 % more work every month\n"
                                     "label = 'a#b'  # the text = a label")
    cell.metadata["tags"] = ["parameters"]
    nb_path = tmp_path / "p.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[cell], metadata={"kernelspec": {
        "name": "python3", "language": "python", "display_name": "Python 3"}}), nb_path)
    params = report_parameters(nb_path)
    assert params["growth_rate_per_month"]["default"] == "0.2"
    assert params["label"]["help"] == "the text = a label"
    assert coerce_parameters(nb_path, {"growth_rate_per_month": "0.3", "label": "x"}) == \
        {"growth_rate_per_month": 0.3, "label": "x"}


def test_cli_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "nope"]) == 2
    assert "unknown report 'nope'; known reports: build, cost, digital_twin, learning, simulate, sla" \
        in capsys.readouterr().err
    assert main(["report", "sla", "-p", "dayz=3"]) == 2
    err = capsys.readouterr().err
    assert "sla_report.ipynb" in err and "unknown parameter 'dayz'; accepted: days, db_path, config_path" in err
    assert main(["report", "sla", "-p", "days=soon"]) == 2
    assert "parameter 'days' expects int" in capsys.readouterr().err
    assert main(["report", "sla", "-p", "days"]) == 2
    assert "-p expects key=value" in capsys.readouterr().err


def test_kernel_of_this_interpreter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert runs_this_interpreter("python") and runs_this_interpreter(sys.executable)
    assert not runs_this_interpreter("/opt/elsewhere/bin/python3")
    assert resolve_kernel("python3") == "python3"
    with pytest.raises(ConfigError, match="unknown Jupyter kernel 'nokernel'; installed: .*python3"):
        resolve_kernel("nokernel")
    # a python3 spec of another interpreter found first on the Jupyter path
    foreign = tmp_path / "jupyter" / "kernels" / "python3"
    foreign.mkdir(parents=True)
    (foreign / "kernel.json").write_text(json.dumps({
        "argv": ["/opt/elsewhere/bin/python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3", "language": "python"}))
    prefix = tmp_path / "prefix"
    monkeypatch.setenv("JUPYTER_PATH", f"{tmp_path / 'jupyter'}{os.pathsep}{prefix / 'share' / 'jupyter'}")
    name = resolve_kernel(prefix=prefix)
    assert name == venv_kernel_name()
    spec = json.loads((prefix / "share" / "jupyter" / "kernels" / name / "kernel.json").read_text())
    assert spec["argv"][0] == sys.executable
