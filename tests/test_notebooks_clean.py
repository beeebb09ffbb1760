"""Every notebook under notebooks/ is committed clean and thin (DESIGN.md, Notebooks)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
LOGIC = re.compile(r"(^|\W)(def|class)\s|\blambda\b")


def _code(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_there_are_notebooks() -> None:
    assert any(p.name == "sla_report.ipynb" for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_clean_and_thin(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    code = _code(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs or execution counts; clear them before committing"
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, f"{path.name}: needs exactly one code cell tagged 'parameters'"
    assert code[0] is params[0], f"{path.name}: the parameters cell must be the first code cell"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            match = LOGIC.search(cell.source)
            assert not match, f"{path.name} cell {i}: '{match.group(0).strip()}' - logic belongs in fibreflow"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_feed_keyword_arguments_of_the_same_name(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    code = _code(nb)
    names = re.findall(r"^([A-Za-z_]\w*)\s*(?::[^=]+)?=", code[0].source, flags=re.M)
    rest = "\n".join(c.source for c in code[1:])
    unused = [n for n in names if not re.search(rf"\b{n}\s*=\s*{n}\b", rest)]
    assert not unused, f"{path.name}: parameters {unused} are not passed as {unused[0]}={unused[0]}"
