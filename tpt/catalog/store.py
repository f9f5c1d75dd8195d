"""The catalog's storage: per table, a folder of immutable Parquet files that DuckDB reads as one view.

A write publishes one new file (a local temp file renamed into place, or one object PUT) and touches nothing else, so
writers never wait on each other and readers take no lock. Every row carries ``_seq``, the time its file was written;
where a primary key appears in more than one file, the row with the highest ``_seq`` is the row (an upsert). The view
resolves that without scanning everything twice: the largest file's rows whose key is in no other file are taken as
they are (an anti join), and only the keys that the other, usually small, files hold are deduplicated.

A table stays at most ``MAX_FILES`` files: the write that finds more merges every file but the largest into one
(deduplicated, ``_seq`` kept), publishes it, then deletes what it merged. A reader that listed a file just deleted
fails to open it and lists again; two merges at once both publish the same rows, which the view deduplicates.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import duckdb
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from tpt.atomic import write_atomic
from tpt.catalog.schema import Table

SEQ = "_seq"
MAX_FILES = 16


class Store:
    """The folder of one catalog: ``<root>/<table>/<seq>-<id>.parquet``; ``root`` may be any fsspec URL."""

    def __init__(self, root: str):
        self.fs, self.root = fsspec.core.url_to_fs(root)
        self.local = isinstance(self.fs, LocalFileSystem)

    def url(self, path: str) -> str:
        """The path as a DuckDB string literal: a local path, or a URL of the fsspec filesystem registered with it."""
        url = path if self.local else self.fs.unstrip_protocol(path)
        return "'" + url.replace("'", "''") + "'"

    def connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect()
        if not self.local:
            con.register_filesystem(self.fs)
        return con

    def files(self, name: str) -> list[tuple[str, int]]:
        """The table's published files as (path, bytes), largest first (temp files are hidden by a leading dot)."""
        try:
            entries = self.fs.ls(f"{self.root}/{name}", detail=True)
        except FileNotFoundError:
            return []
        found = [
            (e["name"], int(e["size"]))
            for e in entries
            if e["type"] == "file"
            and e["name"].endswith(".parquet")
            and not e["name"].rsplit("/", 1)[-1].startswith(".")
        ]
        return sorted(found, key=lambda f: (-f[1], f[0]))

    def write(self, name: str, data: pa.Table) -> None:
        """Publish ``data`` (unique by key, in the table's schema) as one new file of the table."""
        seq = time.time_ns()
        data = data.append_column(SEQ, pa.array(np.full(data.num_rows, seq, dtype=np.int64)))
        self._publish(name, seq, lambda out: pq.write_table(data, out))

    def compact(self, name: str, spec: Table) -> bool:
        """Merge every file but the largest into one when the table holds more than ``MAX_FILES``."""
        files = self.files(name)
        if len(files) <= MAX_FILES:
            return False
        merged = [path for path, _ in files[1:]]
        sql = f"SELECT {_columns(spec)}, {SEQ} FROM {self.scan(merged)}{_latest(spec)}"
        with self.connect() as con:

            def write(out: Path) -> None:
                batches = con.sql(sql).to_arrow_reader()
                with pq.ParquetWriter(out, batches.schema) as writer:
                    for batch in batches:
                        writer.write_batch(batch)

            try:
                self._publish(name, time.time_ns(), write)
            except duckdb.IOException:  # a file already merged and deleted by another writer: its rows are safe
                return False
        for path in merged:
            with contextlib.suppress(FileNotFoundError):  # deleted by a merge running at the same time
                self.fs.rm(path)
        return True

    def view_sql(self, spec: Table, files: list[str]) -> str:
        """One SELECT of the table's current rows over ``files`` (largest first): the newest row per key."""
        columns = _columns(spec)
        if len(files) == 1:
            return f"SELECT {columns} FROM {self.scan(files)}"
        key = ", ".join(spec.key)
        big, rest = f"read_parquet({self.url(files[0])})", self.scan(files[1:])
        return (
            f"SELECT {columns} FROM {big} AS big ANTI JOIN {rest} AS rest USING ({key}) UNION ALL BY NAME "
            f"SELECT {columns} FROM (SELECT {columns}, {SEQ} FROM {rest} UNION ALL BY NAME "
            f"SELECT {columns}, {SEQ} FROM {big} AS big SEMI JOIN {rest} AS rest USING ({key})){_latest(spec)}"
        )

    def scan(self, files: list[str]) -> str:
        listed = ", ".join(self.url(f) for f in files)
        return f"read_parquet([{listed}], union_by_name = true)"

    def _publish(self, name: str, seq: int, write: Callable[[Path], None]) -> None:
        path = f"{self.root}/{name}/{seq:020d}-{uuid.uuid4().hex[:12]}.parquet"
        if self.local:
            write_atomic(path, write)
            return
        with tempfile.TemporaryDirectory() as tmp:  # then one upload: an object store shows it whole or not at all
            write(Path(tmp) / "part.parquet")
            self.fs.makedirs(f"{self.root}/{name}", exist_ok=True)
            self.fs.put_file(str(Path(tmp) / "part.parquet"), path)


def _columns(spec: Table) -> str:
    return ", ".join(spec.columns)


def _latest(spec: Table) -> str:
    return f" QUALIFY row_number() OVER (PARTITION BY {', '.join(spec.key)} ORDER BY {SEQ} DESC) = 1"
