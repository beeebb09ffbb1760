"""The store: the only owner of DuckDB.

Modules:

- ``connection``: ``Store`` (one DuckDB file, opened per unit of work behind a cross-process
  lock), ``StoreReader`` (the reading half, which read-only code asks for), ``BatchWriter``
  (rows from many threads, written in batches), ``open_store`` and ``add_open_hook`` (the
  housekeeping a command runs when it first opens the file, e.g. marking crashed runs).
- ``schema``: the numbered migrations, ``LATEST_VERSION`` and ``TABLE_OWNERS`` (the one module
  that writes each table; everything else reads, or calls that module).
"""

from __future__ import annotations

from fibreflow.store.connection import BatchWriter, Store, StoreReader, add_open_hook, open_store

__all__ = ["BatchWriter", "Store", "StoreReader", "add_open_hook", "open_store"]
