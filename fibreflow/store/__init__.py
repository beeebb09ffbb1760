"""The store: the only owner of DuckDB.

Modules:

- ``connection``: ``Store`` (one DuckDB file, opened per unit of work behind a cross-process
  lock), ``BatchWriter`` (rows from many threads, written in batches) and ``open_store``.
- ``schema``: the numbered migrations and ``LATEST_VERSION``.
"""

from __future__ import annotations

from fibreflow.store.connection import BatchWriter, Store, open_store

__all__ = ["BatchWriter", "Store", "open_store"]
