"""The notebooks not covered by their own subsystem's tests run under papermill with their defaults."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from fibreflow.reporting.runner import run_report
from fibreflow.store import Store
from fibreflow.twin.sample_data import fill_sample_history


@pytest.mark.slow
@pytest.mark.parametrize("name", ["learning", "simulate", "digital_twin"])
def test_notebook_runs_with_its_defaults(name: str, store: Store, tmp_path: Path) -> None:
    fill_sample_history(store, days=3, seed=1)
    out = run_report(name, parameters={}, reports_dir=tmp_path / "reports", timeout_s=240)
    nb = nbformat.read(out.notebook_path, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert outputs, "the notebook showed nothing"
    assert out.html_path.stat().st_size > 10_000


@pytest.mark.slow
def test_learning_report_shows_the_knowledge_base(store: Store) -> None:
    from fibreflow.learning.report import load_learning_report

    fill_sample_history(store, days=3, seed=1)
    report = load_learning_report(days=7, db_path=store.path)
    assert report.stats["patterns"] > 0
    assert 0 < len(report.patterns) <= 10
    assert report.iterations["attempts"].sum() == store.scalar(
        "SELECT count(*) FROM attempts WHERE started_at > now() - INTERVAL 7 DAY")
    assert report.suggestions and "seen" in report.suggestions[0]
    assert "failure patterns known" in report.summary()
