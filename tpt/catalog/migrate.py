"""Convert a catalog of an older schema to the current one, once, while nothing else writes to it.

Schema 1 was one DuckDB file: it is renamed to ``<path>.v1`` (and kept) and its tables are written into the folder
layout at ``<path>``. A folder of an older schema version gets the columns named in ``schema.RENAMES`` renamed: its
rows are written again under the new names, then its old files deleted.
"""

from __future__ import annotations

import json
import os

import duckdb
import pyarrow as pa

from tpt.catalog.catalog import MARKER
from tpt.catalog.schema import RENAMES, SCHEMA_VERSION, TABLES, conform, last_per_key
from tpt.catalog.store import SEQ, Store


def migrate(path: str) -> dict[str, int]:
    """Rows written per table (nothing when the catalog is current)."""
    store = Store(str(path))
    fs, root = store.fs, store.root
    stale: list[str] = []
    if fs.isfile(root):
        if not store.local:
            raise ValueError(f"{path}: a schema-1 catalog is a DuckDB file; copy it to a local disk to migrate it")
        old = f"{root}.v1"
        if os.path.exists(old):
            raise FileExistsError(f"{old} exists already; move it away to migrate {path} again")
        os.replace(root, old)
        tables = _duckdb_tables(old)
    else:
        if json.loads(fs.cat_file(f"{root}/{MARKER}"))["schema_version"] >= SCHEMA_VERSION:
            return {}
        tables, stale = _folder_tables(store)
    counts = {name: _write(store, name, data) for name, data in tables.items()}
    for file in stale:
        fs.rm(file)
    fs.pipe_file(f"{root}/{MARKER}", json.dumps({"schema_version": SCHEMA_VERSION}).encode())
    return counts


def _duckdb_tables(file: str) -> dict[str, pa.Table]:
    with duckdb.connect(file, read_only=True) as con:
        present = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        return {name: con.sql(f"SELECT * FROM {name}").to_arrow_table() for name in TABLES if name in present}


def _folder_tables(store: Store) -> tuple[dict[str, pa.Table], list[str]]:
    tables, files = {}, []
    with store.connect() as con:
        for name in TABLES:
            found = store.files(name)
            if found:  # oldest first, so that the newest row of a key is the one kept
                tables[name] = con.sql(f"SELECT * FROM {store.scan(found)} ORDER BY {SEQ}").to_arrow_table()
                tables[name] = tables[name].drop_columns([SEQ])
                files += found
    return tables, files


def _write(store: Store, name: str, data: pa.Table) -> int:
    renames = RENAMES.get(name, {})
    data = conform(name, data.rename_columns([renames.get(c, c) for c in data.column_names]))
    data = last_per_key(data, TABLES[name].key)
    if data.num_rows:
        store.write(name, data)
    return data.num_rows
