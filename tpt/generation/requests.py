"""Request keys, and the index that finds a finished trajectory by its key. Same key, same trajectory: it is copied.

A key hashes the document (its content-hash id), every versioned generation field (model, prompt template and
version, sampling, document cut, engine) and the engine's installed version, so changing any of them regenerates
exactly the documents it affects, and nothing else.

The index is one DuckDB table under the artifact root, ``request_key -> part file``, written by the driver as each
part lands. A lookup opens the index and then only the part files that hold the asked keys, so it costs
O(documents asked), however many part files were ever written (the index is built once from the existing parts
where it does not exist yet). DuckDB takes one writer at a time: a second run waits for the lock, briefly. The
index is derived data: a part deleted since is a miss, and removing the index file rebuilds it from the parts.
Under an object-store root the index file lives in the local cache (DuckDB updates a database file in place, which
an object store cannot hold); a machine's index then misses the parts other machines wrote after it was built,
and a miss costs a regeneration, never a wrong trajectory.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from tpt.config import GenerationConfig
from tpt.offline import cache_dir
from tpt.paths import Location, is_remote, read_table
from tpt.versioning import content_hash, versioned_fields

PART_GLOB = "*/*/*/shard-*/part-*.parquet"  # <experiment>/<stage>/<output>/<shard>: thinking and estimate samples
INDEX = "request_index.duckdb"
# The index runs in the Dagster process: DuckDB keeps to this and spills past it (its default is 80% of the
# machine), so a backfill over every part ever written does not grow the driver with the corpus.
INDEX_DUCKDB = {"memory_limit": "256MB", "temp_directory": str(Path(tempfile.gettempdir()) / "tpt-request-index-spill")}
_SCHEMA = "CREATE TABLE IF NOT EXISTS requests (request_key VARCHAR PRIMARY KEY, part VARCHAR NOT NULL)"


def request_keys(doc_ids: list[str], generation: GenerationConfig, engine_version: str) -> list[str]:
    settings = content_hash(versioned_fields(generation), engine_version, length=32)
    return [content_hash(settings, doc_id, length=32) for doc_id in doc_ids]


def record_part(root: Path, part: Path, table: pa.Table) -> None:
    """Index the finished (non-error) rows of one part file just written."""
    keys = table.filter(pc.not_equal(table["finish_reason"], "error"))["request_key"]
    if len(keys) == 0:
        return
    rows = pa.table({"request_key": keys, "part": pa.array([_relative(root, part)] * len(keys), pa.string())})
    with _connect(root) as con:
        con.register("new", rows)
        con.execute("INSERT OR REPLACE INTO requests SELECT request_key, part FROM new")


def cached_rows(artifact_root: Path, keys: list[str], exclude_dir: Path | None = None) -> pa.Table | None:
    """Finished (non-error) rows for ``keys`` from any experiment's trajectories under ``artifact_root``."""
    if not keys or not artifact_root.exists():
        return None
    with _connect(artifact_root) as con:
        con.register("wanted", pa.table({"request_key": pa.array(keys, pa.string())}))
        found = con.sql("SELECT r.request_key, r.part FROM requests r JOIN wanted USING (request_key)").fetchall()
    by_part: dict[str, list[str]] = {}
    for key, part in found:
        by_part.setdefault(part, []).append(key)
    tables = []
    for part, wanted in sorted(by_part.items()):
        path = artifact_root / part
        if (exclude_dir is not None and exclude_dir in path.parents) or not path.exists():
            continue
        table = read_table(path, filters=[("request_key", "in", wanted)])
        tables.append(table.filter(pc.not_equal(table["finish_reason"], "error")))
    if not tables:
        return None
    table = pa.concat_tables(tables, promote_options="permissive")
    return table if table.num_rows else None


class _connect:
    """A short read-write connection to the index, waiting (up to a minute) while another run holds its lock."""

    def __init__(self, root: Location):
        self.root = root
        self.path = _index_file(root)

    def __enter__(self) -> duckdb.DuckDBPyConnection:
        fresh = not self.path.exists()
        for attempt in range(120):
            try:
                self.con = duckdb.connect(str(self.path), config=INDEX_DUCKDB)
                break
            except duckdb.IOException:
                if attempt == 119:
                    raise
                time.sleep(0.5)
        self.con.execute(_SCHEMA)
        if fresh:
            _backfill(self.con, self.root)
        return self.con

    def __exit__(self, *exc) -> None:
        self.con.close()


def _index_file(root: Location) -> Path:
    if not is_remote(root):
        return root / INDEX
    folder = cache_dir() / "request-index" / content_hash(str(root), length=16)
    folder.mkdir(parents=True, exist_ok=True)
    return folder / INDEX


def _backfill(con: duckdb.DuckDBPyConnection, root: Location) -> None:
    """Index the parts written before the index existed (once: the only lookup that lists the artifact root)."""
    parts = sorted(root.glob(PART_GLOB))
    if not parts:
        return
    if is_remote(root):
        con.register_filesystem(root.fs)
    with contextlib.suppress(duckdb.BinderException):  # parts written before request keys existed cannot answer
        con.execute(
            "INSERT OR REPLACE INTO requests SELECT DISTINCT ON (request_key) request_key, "
            "replace(filename, $root || '/', '') FROM read_parquet($parts, filename = true, "
            "union_by_name = true) WHERE finish_reason <> 'error'",
            {"root": str(root), "parts": [str(p) for p in parts]},
        )


def _relative(root: Path, part: Path) -> str:
    return str(part.relative_to(root)) if root in part.parents else str(part)
