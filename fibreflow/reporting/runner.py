"""Scheduled reports: a parameterised notebook run through papermill into ``reports/NAME/STAMP``.

``run_report("sla", parameters={"days": 7})`` executes ``notebooks/sla_report.ipynb`` in a
kernel of this interpreter and writes ``reports/sla/<UTC stamp>.ipynb`` plus an HTML copy
without code (``fibreflow.reporting.rendering.export_html``). Parameters given as strings (the CLI's
``-p days=7``) are converted to the type of the notebook's default. A failing cell raises
``ReportError`` naming the cell; the executed notebook is kept. Two guards stop a hung kernel:
papermill's per-cell timeout and a wall-clock watchdog that kills the kernel's process group.

A new report is one line in ``REPORTS``.
"""

from __future__ import annotations

import ast
import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fibreflow.errors import ConfigError, ReportError
from fibreflow.reporting.kernels import KernelWatchdog, resolve_kernel

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"

#: Report name -> notebook under ``notebooks/``.
REPORTS: dict[str, str] = {
    "build": "build.ipynb",
    "cost": "cost_report.ipynb",
    "digital_twin": "digital_twin.ipynb",
    "learning": "learning_report.ipynb",
    "simulate": "simulate.ipynb",
    "sla": "sla_report.ipynb",
}

_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_CELL_LINE = re.compile(r"Cell In\[\d+\], line (\d+)")


@dataclass(frozen=True)
class ReportResult:
    """Where a report run wrote its executed notebook and its HTML copy."""

    notebook_path: Path
    html_path: Path

    def to_dict(self) -> dict[str, str]:
        """The ``report --json`` shape."""
        return {"notebook": str(self.notebook_path), "html": str(self.html_path)}


def report_notebook(name: str) -> Path:
    """The notebook of report ``name``; a path to an ``.ipynb`` file is accepted as is."""
    if name in REPORTS:
        return NOTEBOOKS_DIR / REPORTS[name]
    if name.endswith(".ipynb") and Path(name).is_file():
        return Path(name).resolve()
    raise ConfigError(f"unknown report '{name}'; known reports: {', '.join(sorted(REPORTS))}", key=name)


def report_parameters(notebook: str | Path) -> dict[str, dict[str, Any]]:
    """The notebook's ``parameters`` cell: name -> {default, inferred_type_name, help}.

    Papermill's line parser drops an assignment whose comment holds another ``=`` (it logs
    "Unable to parse line" and the parameter vanishes); every top-level assignment of the cell
    that it missed is added from the cell's syntax tree, so each one is accepted by ``-p``.
    """
    import nbformat
    import papermill

    found = dict(papermill.inspect_notebook(str(notebook)))
    cell = next((c for c in nbformat.read(str(notebook), as_version=4).cells
                 if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    source = cell.source if cell is not None else ""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return found
    lines = source.splitlines()
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if not isinstance(target, ast.Name) or target.id in found:
            continue
        tail = lines[node.end_lineno - 1][node.end_col_offset or 0:] if node.end_lineno else ""
        _, _, comment = tail.partition("#")
        found[target.id] = {"name": target.id, "inferred_type_name": "None",
                            "default": ast.get_source_segment(source, value) or "",
                            "help": comment.strip()}
    return found


def _default_type(spec: dict[str, Any]) -> type | None:
    named = {"int": int, "float": float, "bool": bool, "str": str}.get(spec.get("inferred_type_name") or "")
    if named:
        return named
    try:
        return type(ast.literal_eval(spec.get("default") or ""))
    except (ValueError, SyntaxError):
        return None


def _coerce(name: str, raw: str, spec: dict[str, Any], notebook: Path) -> Any:
    kind = _default_type(spec)
    bad = ConfigError(f"parameter '{name}' expects {getattr(kind, '__name__', kind)} like its default "
                      f"{spec.get('default')}, got {raw!r}", path=str(notebook), key=name)
    if kind is bool:
        if raw.lower() not in _TRUE | _FALSE:
            raise bad
        return raw.lower() in _TRUE
    if kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            raise bad from None
    if kind in (list, dict, tuple):
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            raise bad from None
        if not isinstance(value, kind):
            raise bad
        return value
    if kind is type(None) and raw in ("None", "none", "null"):
        return None
    return raw


def coerce_parameters(notebook: str | Path, parameters: dict[str, Any]) -> dict[str, Any]:
    """Check names against the notebook's parameters cell and convert string values to the default's type."""
    notebook = Path(notebook)
    accepted = report_parameters(notebook)
    out: dict[str, Any] = {}
    for name, value in parameters.items():
        if name not in accepted:
            raise ConfigError(f"unknown parameter '{name}'; accepted: {', '.join(accepted) or '(none)'}",
                              path=str(notebook), key=name)
        out[name] = _coerce(name, value, accepted[name], notebook) if isinstance(value, str) else value
    return out


def _reserve(out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        stem = stamp if n == 0 else f"{stamp}-{n}"
        try:
            (out_dir / f"{stem}.ipynb").open("x").close()  # claims the name against concurrent runs
        except FileExistsError:
            continue
        return out_dir / f"{stem}.ipynb", out_dir / f"{stem}.html"
    raise ReportError(f"{out_dir}: no free report name for stamp {stamp}")


def _source_cell(executed: Path, index: int, traceback: list[str] | None = None) -> tuple[int, str]:
    """Map a cell index of the executed notebook to the source notebook's (papermill injects a cell),
    with the line that raised (from IPython's ``Cell In[n], line k``), else the cell's first line."""
    import nbformat

    cells = [c for c in nbformat.read(executed, as_version=4).cells
             if "papermill-error-cell-tag" not in c.metadata.get("tags", [])]
    injected = sum(1 for c in cells[:index] if "injected-parameters" in c.metadata.get("tags", []))
    lines = cells[index].source.splitlines() if 0 <= index < len(cells) else []
    found = _CELL_LINE.findall(_ANSI.sub("", "\n".join(traceback or [])))
    lineno = int(found[0]) if found else 0
    line = lines[lineno - 1] if 0 < lineno <= len(lines) else next((x for x in lines if x.strip()), "")
    return index - injected, line.strip()


def _started_cell(executed: Path) -> int | None:
    import nbformat

    try:
        cells = nbformat.read(executed, as_version=4).cells
    except Exception:  # an unreadable partial notebook must not mask the timeout
        return None
    started = [i for i, c in enumerate(cells) if c.metadata.get("papermill", {}).get("start_time")]
    return started[-1] if started else None


def run_report(name: str, *, parameters: dict[str, Any] | None = None, reports_dir: Path | None = None,
               timeout_s: float = 600, kernel_name: str | None = None) -> ReportResult:
    """Execute report ``name`` with ``parameters`` and write ``reports_dir/NAME/STAMP.{ipynb,html}``."""
    import papermill
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError

    from fibreflow.reporting.rendering import export_html

    notebook = report_notebook(name)
    label = name if name in REPORTS else notebook.stem
    params = coerce_parameters(notebook, parameters or {})
    kernel = resolve_kernel(kernel_name)
    if reports_dir is None:
        from fibreflow.config import load_settings

        reports_dir = load_settings().reports_dir
    out_nb, out_html = _reserve(Path(reports_dir).resolve() / label)
    watchdog = KernelWatchdog(timeout_s)
    try:
        with watchdog:
            papermill.execute_notebook(
                str(notebook), str(out_nb), parameters=params, kernel_name=kernel, progress_bar=False,
                start_timeout=max(1, int(min(60, timeout_s))), execution_timeout=max(1, int(timeout_s)),
                kernel_manager_class=watchdog.manager_class, shutdown_kernel="immediate",
                # the local kernel's TCP-without-CurveZMQ warning would be on every report's stderr
                extra_arguments=["--IPKernelApp.log_level=ERROR"])
    except PapermillExecutionError as exc:
        cell, line = _source_cell(out_nb, exc.cell_index, exc.traceback)
        _export_quietly(out_nb, out_html, label)
        raise ReportError(
            f"report '{label}' failed in cell {cell} of {notebook} (In [{exc.exec_count}]: {line}): "
            f"{exc.ename}: {exc.evalue}; executed notebook kept at {out_nb}",
            cell_index=cell, ename=exc.ename, evalue=exc.evalue, notebook_path=str(out_nb)) from exc
    except Exception as exc:
        if not (watchdog.fired.is_set() or isinstance(exc, CellTimeoutError | TimeoutError)):
            kept = out_nb.exists() and out_nb.stat().st_size > 0
            if not kept:
                out_nb.unlink(missing_ok=True)  # only the placeholder that reserved the name
            raise ReportError(f"report '{label}' could not run: {type(exc).__name__}: {exc}",
                              notebook_path=str(out_nb) if kept else None) from exc
        index = _started_cell(out_nb)
        timed_out_cell = _source_cell(out_nb, index)[0] if index is not None else None
        where = f" in cell {timed_out_cell}" if timed_out_cell is not None else " before any cell ran"
        _export_quietly(out_nb, out_html, label)
        raise ReportError(f"report '{label}' timed out after {timeout_s:g}s{where}; the kernel was stopped; "
                          f"executed notebook kept at {out_nb}", cell_index=timed_out_cell, ename="TimeoutError",
                          evalue=f"wall-clock limit {timeout_s:g}s", notebook_path=str(out_nb)) from exc
    export_html(out_nb, out_html, title=f"{label} report {out_nb.stem}")
    return ReportResult(out_nb, out_html)


def _export_quietly(out_nb: Path, out_html: Path, label: str) -> None:
    from fibreflow.reporting.rendering import export_html

    try:
        export_html(out_nb, out_html, title=f"{label} report {out_nb.stem} (failed)")
    except Exception:  # the notebook is the record of a failure; its HTML copy is a convenience
        pass


__all__ = ["NOTEBOOKS_DIR", "REPORTS", "ReportResult", "coerce_parameters", "report_notebook",
           "report_parameters", "run_report"]
