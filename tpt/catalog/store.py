"""The catalog's storage: per table, a folder of Parquet files that DuckDB reads as one view.

A write publishes one new *delta* file (a local temp file renamed into place, or one upload) and touches nothing
else, so writers never wait on each other and readers take no lock. Every row carries ``_seq``, the time its write
began; where a primary key is in more than one file, its row with the highest ``_seq`` is the row (an upsert).

*Base* files hold no key twice between them, so a table that is all bases is read as a plain scan: at 10M rows a
deduplicating scan of random keys costs seconds to tens of seconds, a plain one a fraction of a second. Only the keys
the deltas hold are deduplicated: bases anti-joined with the deltas' keys, plus the newest row of each delta key.

Deltas become bases in a merge, run by the write that leaves more than ``MAX_DELTAS`` deltas or ``MAX_DELTA_BYTES``
of them, and only if no other process is merging that table (a lock file created exclusively; a writer that finds
it skips the merge instead of waiting). A merge publishes the newest row per delta key as one base, replaces each
other base that held one of those keys by a copy without them, deletes the deltas, and then joins the bases under
``SMALL_BASE_BYTES`` into one (a plain copy: bases are disjoint), so a table keeps about one base per
``SMALL_BASE_BYTES`` and a merge's work follows its deltas, not the table. No file is changed in place: a replacement
is published as a delta (which readers deduplicate) before the files it replaces go, and then renamed to a base. A
reader sees the right rows at every step; one that listed a file just deleted lists again; a merge that dies leaves
deltas that the next merge takes again.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
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
BASE, DELTA = "base-", "delta-"
MAX_DELTAS = 8
MAX_DELTA_BYTES = 32 << 20
SMALL_BASE_BYTES = 64 << 20
MERGE_STALE_S = 3600.0  # a merge lock older than this was left by a process that died
COPY_BATCH_ROWS = 65536  # rows a merge holds in Arrow at once (DuckDB would hand over up to a million)
# Catalog queries and merges run inside the Dagster process: DuckDB keeps to this memory (a merge's window over its
# deltas, at most about MAX_DELTA_BYTES of them, fits) and spills past it, so the process does not grow with the
# catalog.
DUCKDB_CONFIG = {
    "memory_limit": "128MB",
    "threads": 1,
    "preserve_insertion_order": False,
    "temp_directory": str(Path(tempfile.gettempdir()) / "tpt-catalog-spill"),
}


class Store:
    """The folder of one catalog: ``<root>/<table>/{base,delta}-<seq>-<id>.parquet``; ``root`` may be any fsspec
    URL."""

    def __init__(self, root: str):
        self.fs, self.root = fsspec.core.url_to_fs(root)
        self.local = isinstance(self.fs, LocalFileSystem)

    def url(self, path: str) -> str:
        """The path as DuckDB opens it: a local path, or a URL of the fsspec filesystem registered with it."""
        return path if self.local else self.fs.unstrip_protocol(path)

    def connect(self) -> duckdb.DuckDBPyConnection:
        con = duckdb.connect(config=DUCKDB_CONFIG)
        con.execute("SET enable_progress_bar = false")  # DuckDB would draw one on stdout, into the run's logs
        if not self.local:
            con.register_filesystem(self.fs)
        return con

    def files(self, name: str) -> list[str]:
        """The table's published files, oldest first (temp and lock files are hidden by a leading dot)."""
        return [path for path, _ in self._listing(name)]

    def write(self, name: str, data: pa.Table) -> None:
        """Publish ``data`` (unique by key, in the table's schema) as one new delta of the table."""
        seq = time.time_ns()
        data = data.append_column(SEQ, pa.array(np.full(data.num_rows, seq, dtype=np.int64)))
        self._publish(self._new(name, DELTA, seq), lambda out: pq.write_table(data, out))

    def view_sql(self, spec: Table, files: list[str]) -> str:
        """One SELECT of the table's current rows over ``files``: the newest row per key."""
        columns = _columns(spec)
        bases, deltas = _split(files)
        if not deltas or (not bases and len(deltas) == 1):
            return f"SELECT {columns} FROM {self.scan(files)}"
        if not bases:
            return f"SELECT {columns} FROM {self.scan(deltas)}{_latest(spec)}"
        key, based, news = ", ".join(spec.key), self.scan(bases), self.scan(deltas)
        return (
            f"SELECT {columns} FROM {based} AS b ANTI JOIN {news} AS d USING ({key}) UNION ALL BY NAME "
            f"SELECT {columns} FROM ({self._touched(spec, bases, deltas)}){_latest(spec)}"
        )

    def scan(self, files: list[str], filename: bool = False) -> str:
        listed = ", ".join("'" + self.url(f).replace("'", "''") + "'" for f in files)
        return f"read_parquet([{listed}], union_by_name = true{', filename = true' if filename else ''})"

    def merge(self, name: str, spec: Table) -> bool:
        """Turn the deltas into bases when there are enough of them; False when not due or another process merges."""
        deltas = [size for path, size in self._listing(name) if _kind(path) == DELTA]
        if len(deltas) <= MAX_DELTAS and sum(deltas) <= MAX_DELTA_BYTES:
            return False
        with self._lock(name) as held:
            if held:
                self._merge(name, spec, *_split(self.files(name)))  # the files as of now that the lock is held
                self._compact(name)
            return held

    def _merge(self, name: str, spec: Table, bases: list[str], deltas: list[str]) -> None:
        key = ", ".join(spec.key)
        with self.connect() as con:
            hit = set()
            if bases:
                sql = f"SELECT DISTINCT filename FROM {self.scan(bases, True)} AS b SEMI JOIN {self.scan(deltas)} AS d "
                sql += f"USING ({key})"
                hit = {row[0] for row in con.execute(sql).fetchall()}
            touched = [b for b in bases if self.url(b) in hit]
            if len(deltas) == 1 and not touched:  # already unique, and disjoint from the bases
                self.fs.mv(deltas[0], self._new(name, BASE, _seq_of(deltas[0])))
                return
            merged = f"SELECT {_columns(spec)}, {SEQ} FROM ({self._touched(spec, touched, deltas)}){_latest(spec)}"
            base = self._new(name, BASE, time.time_ns())
            self._publish(base, lambda out: _copy(con, merged, out))
            for old in touched:  # without the keys the new base now holds
                kept = f"SELECT * FROM {self.scan([old])} AS b ANTI JOIN {self.scan([base])} AS n USING ({key})"
                self._replace(name, [old], kept, con)
        for delta in deltas:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(delta)

    def _compact(self, name: str) -> None:
        """Join the small bases into one, so that a table keeps about one base per ``SMALL_BASE_BYTES``. Bases hold
        no key twice between them, so this is a plain streaming copy: memory of a few row groups, whatever the size
        of the table."""
        small = [path for path, size in self._listing(name) if _kind(path) == BASE and size < SMALL_BASE_BYTES]
        if len(small) > 1:
            with self.connect() as con:
                self._replace(name, small, f"SELECT * FROM {self.scan(small)}", con)

    def _replace(self, name: str, olds: list[str], sql: str, con: duckdb.DuckDBPyConnection) -> None:
        """Put the rows of ``sql`` in the place of the bases ``olds`` without changing a file under a reader: they
        are published as a delta first (a reader that lists it beside the olds takes each row once), then the olds
        go and the delta becomes a base."""
        new = self._new(name, DELTA, max(_seq_of(p) for p in olds))
        self._publish(new, lambda out: _copy(con, sql, out))
        for path in olds:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(path)
        self.fs.mv(new, new.replace(f"/{DELTA}", f"/{BASE}"))

    def _touched(self, spec: Table, bases: list[str], deltas: list[str]) -> str:
        """The deltas' rows, and the bases' rows of the keys the deltas hold."""
        columns = f"{_columns(spec)}, {SEQ}"
        news = f"SELECT {columns} FROM {self.scan(deltas)}"
        if not bases:
            return news
        return (
            f"{news} UNION ALL BY NAME SELECT {columns} FROM {self.scan(bases)} AS b "
            f"SEMI JOIN {self.scan(deltas)} AS d USING ({', '.join(spec.key)})"
        )

    def _listing(self, name: str) -> list[tuple[str, int]]:
        try:
            entries = self.fs.ls(f"{self.root}/{name}", detail=True)
        except FileNotFoundError:
            return []
        return sorted(
            (e["name"], int(e["size"]))
            for e in entries
            if e["type"] == "file" and e["name"].endswith(".parquet") and _kind(e["name"]) in (BASE, DELTA)
        )

    def _new(self, name: str, kind: str, seq: int) -> str:
        return f"{self.root}/{name}/{kind}{seq:020d}-{uuid.uuid4().hex[:12]}.parquet"

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[bool]:
        lock = f"{self.root}/{name}/.merging"
        held = self._take(lock)
        try:
            yield held
        finally:
            if held:
                self.fs.rm(lock)

    def _take(self, lock: str) -> bool:
        for _ in range(2):
            try:
                with self.fs.open(lock, "xb") as out:  # only if absent (local, memory; S3 needs conditional PUT)
                    out.write(str(time.time()).encode())
                return True
            except FileExistsError:
                try:
                    age = time.time() - float(self.fs.cat_file(lock))
                except (FileNotFoundError, ValueError):  # released meanwhile, or still being written
                    continue
                if age < MERGE_STALE_S:
                    return False
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm(lock)  # left by a merge that died; take it over
        return False

    def _publish(self, path: str, write: Callable[[Path], None]) -> None:
        if self.local:
            write_atomic(path, write)
            return
        with tempfile.TemporaryDirectory() as tmp:  # then one upload: an object store shows it whole or not at all
            write(Path(tmp) / "part.parquet")
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            self.fs.put_file(str(Path(tmp) / "part.parquet"), path)


def _copy(con: duckdb.DuckDBPyConnection, sql: str, out: Path) -> None:
    batches = con.sql(sql).to_arrow_reader(batch_size=COPY_BATCH_ROWS)
    with pq.ParquetWriter(out, batches.schema) as writer:
        for batch in batches:
            writer.write_batch(batch)


def _kind(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return BASE if name.startswith(BASE) else DELTA if name.startswith(DELTA) else ""


def _split(files: list[str]) -> tuple[list[str], list[str]]:
    return [f for f in files if _kind(f) == BASE], [f for f in files if _kind(f) == DELTA]


def _seq_of(path: str) -> int:
    return int(path.rsplit("/", 1)[-1].split("-")[1])


def _columns(spec: Table) -> str:
    return ", ".join(spec.columns)


def _latest(spec: Table) -> str:
    return f" QUALIFY row_number() OVER (PARTITION BY {', '.join(spec.key)} ORDER BY {SEQ} DESC) = 1"
