"""One writer per store table: every INSERT, UPDATE and DELETE of a table lives in its owner.

The scan reads the source of every module of ``fibreflow`` (``ast``, nothing is imported) and
finds each statement that writes a table of the store:

* SQL text (string constants and the literal parts of f-strings, docstrings excepted) with
  ``INSERT [OR REPLACE|IGNORE] INTO t``, ``UPDATE t`` or ``DELETE FROM t``;
* calls ``insert_rows(t, rows)``, ``put(t, row)`` (``BatchWriter``) and ``record(t, row)``
  with a literal table name.

A write whose table is not a literal (``insert_rows(table, ...)``, ``f"INSERT INTO {table}"``)
or a writer method handed on as a value (``writer.put`` as a callback) could write any table
from anywhere, so outside ``fibreflow/store/`` it fails the test. Tables are those the
migrations create (plus ``schema_version``); ``TABLE_OWNERS`` in ``fibreflow.store.schema``
names each one's owner, and the owner must be the only module writing it.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import fibreflow
from fibreflow.store.schema import MIGRATIONS, TABLE_OWNERS

PACKAGE_ROOT = Path(fibreflow.__file__).parent
STORE_PACKAGE = "fibreflow.store"
_HOLE = "\x00"  # stands for an f-string's interpolated part: a table name there is dynamic
_SQL_WRITE = re.compile(
    r"\b(?:INSERT\s+(?:OR\s+(?:REPLACE|IGNORE)\s+)?INTO|UPDATE|DELETE\s+FROM)\s+(?P<table>[A-Za-z_]\w*|\x00)",
    re.IGNORECASE)
_CREATE = re.compile(r"\bCREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([A-Za-z_]\w*)", re.IGNORECASE)
#: writer calls and the argument count of their (table, row[s]) shape
_WRITE_CALLS = {"insert_rows": 2, "put": 2, "record": 2}
#: writer methods that must not be handed on as values (a callback writing an unnamed table)
_WRITER_METHODS = ("insert_rows", "put")


def store_tables() -> set[str]:
    """Every table of the store: those the migrations create, and the migration runner's own."""
    return {name for m in MIGRATIONS for name in _CREATE.findall(m.sql)} | {"schema_version"}


@dataclass
class Findings:
    """What the scan found: table -> module -> lines, and the writes it cannot attribute."""

    writers: dict[str, dict[str, list[int]]] = field(default_factory=lambda: defaultdict(dict))
    dynamic: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def add(self, table: str, module: str, line: int) -> None:
        self.writers[table].setdefault(module, []).append(line)

    def shared(self) -> dict[str, list[str]]:
        """Tables written from more than one module, with those modules."""
        return {t: sorted(mods) for t, mods in self.writers.items() if len(mods) > 1}


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of docstring and other bare-string statements: prose, never SQL that runs."""
    return {id(node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)}


def _callee(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _sql_text(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else _HOLE
                       for v in node.values)
    return None


def scan_source(source: str, module: str, tables: set[str], findings: Findings) -> None:
    """Add the writes of one module's source to ``findings``."""
    tree = ast.parse(source)
    prose = _docstrings(tree)
    in_store = module == STORE_PACKAGE or module.startswith(STORE_PACKAGE + ".")
    inside_fstring = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values}
    called = {id(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    for node in ast.walk(tree):
        where = f"{module}:{getattr(node, 'lineno', '?')}"
        text = None if id(node) in prose or id(node) in inside_fstring else _sql_text(node)
        if text is not None:
            for match in _SQL_WRITE.finditer(text):
                table = match.group("table")
                if table == _HOLE:
                    if not in_store:
                        findings.dynamic.append(f"{where}: SQL writes a table named at run time")
                elif table.lower() in tables:
                    findings.add(table.lower(), module, node.lineno)  # type: ignore[attr-defined]
        if isinstance(node, ast.Attribute) and node.attr in _WRITER_METHODS and id(node) not in called \
                and isinstance(node.ctx, ast.Load) and not in_store:
            findings.dynamic.append(f"{where}: .{node.attr} handed on as a value (a writer of an unnamed table)")
        if not isinstance(node, ast.Call):
            continue
        name = _callee(node)
        if name not in _WRITE_CALLS:
            continue
        kw = {k.arg: k.value for k in node.keywords if k.arg is not None}
        if len(node.args) + len(kw) != _WRITE_CALLS[name] and name != "insert_rows":
            continue  # not the (table, row) shape: queue.put(item), a record(result) callback
        target = node.args[0] if node.args else kw.get("table")
        if isinstance(target, ast.Constant) and isinstance(target.value, str):
            if target.value in tables:
                findings.add(target.value, module, node.lineno)
            elif name == "insert_rows":
                findings.unknown.append(f"{where}: insert_rows into {target.value!r}, not a table of the store")
        elif not in_store:
            findings.dynamic.append(f"{where}: {name}() with a table that is not a literal")


def scan_sources(sources: Mapping[str, str], tables: set[str]) -> Findings:
    """The writes of several modules (module name -> source)."""
    findings = Findings()
    for module, source in sources.items():
        scan_source(source, module, tables, findings)
    return findings


def package_sources(root: Path = PACKAGE_ROOT) -> dict[str, str]:
    """module name -> source of every module of the package."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path.read_text()
    return out


def _problems(findings: Findings, owners: Mapping[str, str], tables: Iterable[str]) -> list[str]:
    problems = list(findings.dynamic) + list(findings.unknown)
    for table, modules in sorted(findings.shared().items()):
        places = "; ".join(f"{m} (line {', '.join(map(str, findings.writers[table][m]))})" for m in modules)
        problems.append(f"{table} has writers in {len(modules)} modules: {places}")
    for table in sorted(tables):
        found = set(findings.writers.get(table, {}))
        owner = owners.get(table)
        if owner is None:
            problems.append(f"{table} has no owner in TABLE_OWNERS")
        elif found and found != {owner}:
            problems.append(f"{table} is written by {', '.join(sorted(found - {owner}))}, "
                            f"not only its owner {owner}")
        elif not found:
            problems.append(f"{table}: no writer found (its owner {owner} should write it)")
    return problems


def test_every_store_table_is_written_by_its_owner_only() -> None:
    tables = store_tables()
    assert set(TABLE_OWNERS) == tables, "TABLE_OWNERS must name exactly the store's tables"
    sources = package_sources()
    assert set(TABLE_OWNERS.values()) <= set(sources), "every owner in TABLE_OWNERS must be a module"
    findings = scan_sources(sources, tables)
    problems = _problems(findings, TABLE_OWNERS, tables)
    assert not problems, "\n".join(problems)


SNIPPETS = {
    "fibreflow.store.connection": '''
def _insert(con, table, rows):
    con.execute(f"INSERT INTO {table} VALUES (?)", rows)   # the store's own: allowed
''',
    "fibreflow.a": '''
"""Docstring: UPDATE runs SET nothing, this is prose."""
def f(store, writer, queue):
    store.insert_rows("runs", [{}])
    writer.put("attempts", {})
    queue.put(object())                                     # a queue, not a table
    store.execute(f"UPDATE features SET {cols} WHERE run_id = ?", [])
''',
    "fibreflow.b": '''
def g(store, con, record, table, pool):
    con.execute("INSERT OR REPLACE INTO runs (run_id) VALUES (?)", [1])
    con.execute("DELETE FROM features WHERE 1 = 1 "
                "AND 2 = 2")
    record("attempts", {})
    store.insert_rows(table, [])                            # dynamic: could be any table
    con.execute(f"INSERT INTO {table} VALUES (1)")          # dynamic SQL
    pool.submit(work, writer.put)                           # a writer handed on
    store.insert_rows("not_a_table", [])
''',
}


def test_the_scanner_finds_writers_in_two_modules_and_dynamic_ones() -> None:
    tables = {"runs", "features", "attempts"}
    findings = scan_sources(SNIPPETS, tables)
    assert findings.shared() == {t: ["fibreflow.a", "fibreflow.b"] for t in ("attempts", "features", "runs")}
    assert findings.writers["runs"] == {"fibreflow.a": [4], "fibreflow.b": [3]}
    assert [d.split(":")[:2] for d in findings.dynamic] == [["fibreflow.b", "7"], ["fibreflow.b", "8"],
                                                            ["fibreflow.b", "9"]]
    assert len(findings.unknown) == 1 and "not_a_table" in findings.unknown[0]
    problems = _problems(findings, {"runs": "fibreflow.a", "features": "fibreflow.a", "attempts": "fibreflow.a"},
                         tables)
    assert any(p.startswith("runs has writers in 2 modules: fibreflow.a (line 4); fibreflow.b (line 3)")
               for p in problems)
    assert "fibreflow.store.connection" not in "\n".join(problems)
