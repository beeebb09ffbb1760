"""The store: the only owner of DuckDB.

Modules:

- ``connection``: ``Store`` (the store's API over one engine, opened per unit of work),
  ``StoreReader`` (the reading half, which read-only code asks for), ``BatchWriter`` (rows from
  many threads, written in batches), ``open_store`` (the configured store, migrated) and
  ``add_open_hook`` (the housekeeping a command runs when it first opens the store, e.g.
  marking crashed runs) and ``store_tables`` (the tables of the store a connection is on).
- ``engines``: the store modes behind ``Store``, chosen by the store URL (``open_engine``):
  ``FileEngine`` (the embedded DuckDB file behind a cross-process lock, or the store server that
  owns it), ``QuackEngine`` (a store server over DuckDB's Quack protocol); DuckLake is ``lake``.
- ``lake``: ``LakeEngine``, a DuckLake (catalog on PostgreSQL, data files under ``store.data_path``)
  shared by many hosts, writers ordered by an advisory lock; ``compact_store`` (``store compact``).
- ``transfer``: ``copy_store``, every table from one store to another (``store migrate --to``).
- ``quack``: ``QuackEngine``, a store server reached over DuckDB's Quack protocol; ``remote``: the
  connection it yields (every statement runs whole on the server, parameters as literals).
- ``extensions``: DuckDB extensions loaded by path from their pip packages (``load_extension``).
- ``discovery``: the record a store server leaves beside its file, and its token file.
- ``server``: ``fibreflow store serve``: one process owns the file and serves it over Quack.
- ``schema``: the numbered migrations, ``LATEST_VERSION`` and ``TABLE_OWNERS`` (the one module
  that writes each table; everything else reads, or calls that module).
"""

from __future__ import annotations

from fibreflow.store.connection import (
    BatchWriter,
    Store,
    StoreReader,
    add_open_hook,
    open_store,
    store_tables,
)

__all__ = ["BatchWriter", "Store", "StoreReader", "add_open_hook", "open_store", "store_tables"]
