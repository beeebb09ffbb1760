"""The folders are the architecture: each package imports only the layers below it, every command
lives in ``fibreflow/cli``, each package says what its modules are, and type-ignores say why."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fibreflow"

# Bottom to top: a unit may import units of earlier layers only (never its own layer's siblings),
# so the graph between units has no cycle. docs/ARCHITECTURE.md draws the same order.
LAYERS: list[set[str]] = [
    {"errors"},
    {"yamlio", "clock", "redaction"},
    {"config"},
    {"store", "reporting", "testing"},
    {"models", "sandbox"},
    {"agents"},
    {"build"},
    {"learning", "sla", "simulation", "costs"},
    {"selection"},
    {"autopilot"},
    {"twin"},
    {"demo"},
    {"benchmarks"},
    {"cli"},
]
RANK = {unit: i for i, layer in enumerate(LAYERS) for unit in layer}
FOUNDATIONS = {"__init__", "config", "errors", "yamlio", "clock", "redaction"}


def unit_of(module: str) -> str | None:
    """``fibreflow.build.runner`` -> ``build``; ``fibreflow`` itself (the lazy public API) -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "fibreflow" else None


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every fibreflow module ``path`` imports: top level, inside functions and under TYPE_CHECKING."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "fibreflow":
                found += [(node.lineno, f"fibreflow.{a.name}") for a in node.names]
            elif node.module.startswith("fibreflow."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; write the absolute module")
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("fibreflow.")]
    return found


def layer_violations(files: list[Path], root: Path = PACKAGE.parent) -> list[str]:
    bad = []
    for path in files:
        src = unit_of(module_name(path, root))
        if src is None:
            continue
        for line, target in imports_of(path):
            dst = unit_of(target)
            if dst is None or dst == src:
                continue
            if dst not in RANK or src not in RANK:
                bad.append(f"{path.relative_to(root)}:{line}: {src} -> {dst}: unit not in LAYERS")
            elif RANK[dst] >= RANK[src]:
                bad.append(f"{path.relative_to(root)}:{line}: {src} imports {target} "
                           f"(layer {RANK[dst]} is not below layer {RANK[src]})")
    return bad


def package_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_unit_of_the_package_has_a_layer() -> None:
    units = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir()
                                                       if (p / "__init__.py").exists()}
    assert units - {"__init__"} == set(RANK)


def test_each_package_imports_only_the_layers_below_it() -> None:
    assert layer_violations(package_files()) == []


def test_the_layer_check_catches_an_upward_and_a_sideways_import(tmp_path: Path) -> None:
    (tmp_path / "fibreflow" / "store").mkdir(parents=True)
    (tmp_path / "fibreflow" / "learning").mkdir()
    up = tmp_path / "fibreflow" / "store" / "probe.py"
    up.write_text("def f() -> None:\n    from fibreflow.build.runner import ParallelRunner\n")
    side = tmp_path / "fibreflow" / "learning" / "probe.py"
    side.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from fibreflow.sla.monitor import SLAMonitor\n")
    found = layer_violations([up, side], tmp_path)
    assert len(found) == 2
    assert "store imports fibreflow.build.runner" in found[0]
    assert "learning imports fibreflow.sla.monitor" in found[1]


def test_only_foundations_sit_directly_under_the_package() -> None:
    assert {p.stem for p in PACKAGE.glob("*.py")} == FOUNDATIONS


def test_every_command_lives_in_the_cli_package() -> None:
    assert not [p for p in package_files() if p.stem.endswith("_cli") or p.stem == "cli"]
    outside = []
    for path in package_files():
        if path.parent.name == "cli":
            continue
        text = path.read_text()
        if re.search(r"\.add_parser\(|add_subparsers\(|_SubParsersAction", text):
            outside.append(str(path.relative_to(PACKAGE.parent)))
    assert outside == []


def test_build_is_defined_in_one_module_without_argparse_internals() -> None:
    cli = PACKAGE / "cli"
    defining = [p.name for p in cli.glob("*.py") if '"build"' in p.read_text() and "add_parser" in p.read_text()]
    assert defining == ["build.py"]
    for path in package_files():
        assert "_option_string_actions" not in path.read_text(), path


@pytest.mark.parametrize("package", sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py")))
def test_each_package_docstring_names_its_modules(package: str) -> None:
    init = PACKAGE / package / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text())) or ""
    modules = sorted(p.stem for p in (PACKAGE / package).glob("*.py") if p.stem not in {"__init__", "__main__"})
    modules += sorted(p.name for p in (PACKAGE / package).iterdir() if (p / "__init__.py").exists())
    missing = [m for m in modules if not re.search(rf"``{re.escape(m)}``", doc)]
    assert doc and not missing, f"fibreflow/{package}/__init__.py docstring does not list {missing}"


def test_type_ignores_name_their_code_and_reason_and_do_not_grow() -> None:
    ignores = []
    for path in package_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if "type: ignore" in line:
                ignores.append((f"{path.relative_to(PACKAGE.parent)}:{number}", line))
    assert len(ignores) <= 13, [where for where, _ in ignores]
    for where, line in ignores:
        assert re.search(r"type: ignore\[[a-z-]+(, ?[a-z-]+)*\]\s+#\s*\S", line), \
            f"{where}: a type: ignore names its error code and the reason: {line.strip()}"
