"""DuckDB extensions loaded by path from their pip packages, never downloaded and never unsigned.

DuckDB publishes quack, httpfs, ducklake and postgres_scanner as pip packages
(``duckdb-extension-<name>``) for the DuckDB version they were built for; the file sits at
``duckdb_extension_<name>/extensions/v<duckdb version>/<name>.duckdb_extension``. Loading it by
path keeps the store working offline and keeps DuckDB's signature check on (we never set
``allow_unsigned_extensions``). A missing package or one built for another DuckDB is an error
that names the pip package to install.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import duckdb

from fibreflow.errors import StoreError


class ExtensionError(StoreError):
    """A DuckDB extension the store needs is not installed for this DuckDB version."""


def pip_package(name: str) -> str:
    """The pip package that ships extension ``name`` (``postgres_scanner`` -> ``duckdb-extension-postgres-scanner``)."""
    return "duckdb-extension-" + name.replace("_", "-")


def extension_path(name: str, *, package: str | None = None) -> Path:
    """The extension file for this DuckDB from its pip package; ``package`` overrides the module
    name (``duckdb_extension_<name>``)."""
    module = package or f"duckdb_extension_{name}"
    version = duckdb.__version__
    install = f"pip install {pip_package(name)}=={version}"
    spec = importlib.util.find_spec(module) if module.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise ExtensionError(f"DuckDB extension {name!r} is not installed (no Python package {module}); "
                             f"run `{install}`")
    root = Path(next(iter(spec.submodule_search_locations))) / "extensions"
    path = root / f"v{version}" / f"{name}.duckdb_extension"
    if not path.is_file():
        found = sorted(p.name for p in root.glob("v*")) if root.is_dir() else []
        raise ExtensionError(f"DuckDB extension {name!r} from {module} is built for DuckDB "
                             f"{', '.join(found) or 'no known version'}, not v{version}; run `{install}`")
    return path


def load_extension(con: duckdb.DuckDBPyConnection, name: str, *, package: str | None = None) -> None:
    """``LOAD`` extension ``name`` into ``con`` from its pip package (signature checked)."""
    path = extension_path(name, package=package)
    try:
        con.execute(f"LOAD '{path}'")
    except duckdb.Error as exc:
        raise ExtensionError(f"DuckDB extension {name!r} at {path} did not load ({exc}); "
                             f"reinstall it: `pip install --force-reinstall {pip_package(name)}=={duckdb.__version__}`"
                             ) from exc
