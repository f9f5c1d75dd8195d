"""The metadata and lineage catalog: every stage's figures, and the rows that tie a score to its inputs.

Layout: a folder (any fsspec URL) with one sub-folder of immutable Parquet files per table, read by DuckDB as views
(``store.py``); the tables are declared once in ``schema.py``; the queries the assets and ``tpt lineage`` use are in
``catalog.py``.

Why Parquet files and not Arrow bulk inserts into one DuckDB file: both are bulk, but a DuckDB file admits one writer
process at a time, and while it writes no other process may even open it to read (and its lock is not reliable on
network filesystems or possible on object storage). Publishing a file per write needs no lock at all: two runs record
at once, a check or ``tpt lineage`` reads while a generation run writes, and the folder may live on s3://. Measured on
the same rows in one run (``benchmarks/bench_catalog.py``, figures in benchmarks/RESULTS.md) the file path also
writes faster than the bulk insert, since it skips the primary-key index.
"""

from tpt.catalog.catalog import Catalog, CatalogLayoutError

__all__ = ["Catalog", "CatalogLayoutError"]
